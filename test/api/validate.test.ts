/**
 * $validate and the conformance resources over HTTP: the FHIR examples of the shared corpus and every resource
 * converted from the shared HL7 v2 corpus pass `POST /fhir/{type}/$validate` (when the shared corpus is there:
 * CG_CORPUS_DIR); broken variants of a plan of our own fail with the right expressions; nothing is stored; the
 * profiles, CodeSystems and ValueSets are served and listed in the CapabilityStatement; the shared plan and team
 * written by the assembly conform to their profiles.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, CapabilityStatement, CarePlan, OperationOutcome, Resource, StructureDefinition, ValueSet } from '@medplum/fhirtypes';
import type { Gateway } from '../../src/app.js';
import { decodeHl7 } from '../../src/hl7v2/decode.js';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { convertHl7 } from '../../src/mapping/hl7v2/convert.js';
import { pgliteBackend, type Backend } from '../helpers/backends.js';
import { startTestGateway } from '../helpers/gateway.js';
import { corpusFiles, requireCorpusDir, testCorpus } from '../helpers/corpus.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

const FHIR_EXAMPLES = 'fhir/r4-spec-examples';
const PLAN = path.resolve('test/fixtures/fhir/CarePlan-home-rehab.json');

let backend: Backend;
let gw: Gateway;
let base: string;
let url: string;
beforeAll(async () => {
  backend = pgliteBackend();
  await backend.prepare();
  ({ gw, base, url } = await startTestGateway(backend));
});
afterAll(async () => {
  await gw.close();
  await backend.cleanup();
});

const validate = async (r: unknown, type = (r as Resource).resourceType, query = ''): Promise<OperationOutcome> => {
  const res = await fetch(`${base}/${type}/$validate${query}`, { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify(r) });
  expect(res.status).toBe(200);
  return (await res.json()) as OperationOutcome;
};
const errors = (oo: OperationOutcome) => oo.issue.filter((i) => i.severity === 'error' || i.severity === 'fatal');

testCorpus(FHIR_EXAMPLES, 'the FHIR examples of the corpus pass $validate', async () => {
  const files = corpusFiles(FHIR_EXAMPLES, '.json');
  expect(files.length).toBeGreaterThanOrEqual(10);
  for (const f of files) {
    const r = JSON.parse(fs.readFileSync(path.join(requireCorpusDir(FHIR_EXAMPLES), f), 'utf8')) as Resource;
    const oo = await validate(r);
    expect([f, errors(oo)]).toEqual([f, []]);
    expect(oo.issue[0].diagnostics).toBe('All OK');
  }
});

test('a plan passes $validate, and broken variants fail at the right element', async () => {
  const plan = JSON.parse(fs.readFileSync(PLAN, 'utf8')) as CarePlan;
  const oo = await validate(plan);
  expect(errors(oo)).toEqual([]);
  expect(oo.issue[0].diagnostics).toBe('All OK');
  const { subject: _s, ...noSubject } = plan;
  expect(errors(await validate(noSubject)).map((i) => i.expression![0])).toContain('CarePlan.subject');
  expect(errors(await validate({ ...plan, status: 'finished-ish' })).map((i) => i.expression![0])).toContain('CarePlan.status');
  expect(errors(await validate({ ...plan, colour: 'blue' })).map((i) => i.expression![0])).toContain('CarePlan.colour');
  // as the shared plan profile: another category, and activities written inline (detail) rather than referenced
  const asShared = errors(await validate(plan, 'CarePlan', '?profile=https://care-gateway.ee/fhir/StructureDefinition/shared-careplan'));
  expect(asShared.map((i) => i.expression![0])).toEqual(['CarePlan.category[0]', 'CarePlan.activity[0].reference', 'CarePlan.activity[0].detail']);
});

testCorpus('hl7v2', 'every resource converted from the HL7 v2 corpus passes $validate', async () => {
  let checked = 0;
  for (const f of corpusFiles('hl7v2', '.hl7')) {
    for (const msg of decodeHl7(fs.readFileSync(path.join(requireCorpusDir('hl7v2'), f)), 'utf-8').text.split(/\r(?=MSH\|)/)) {
      let resources: Resource[];
      try {
        const c = convertHl7(parseHl7(msg));
        if (c.issues.some((i) => i.severity === 'error')) continue; // refused content (the golden test pins these)
        resources = [c.patient, ...c.resources];
      } catch {
        continue; // unsupported message types
      }
      for (const r of resources) {
        expect([f, r.resourceType, errors(await validate(r))]).toEqual([f, r.resourceType, []]);
        checked++;
      }
    }
  }
  expect(checked).toBeGreaterThan(300);
});

test('a wrong isikukood slice fails $validate; nothing is stored; a resource of another type is 422', async () => {
  const NI = 'https://fhir.ee/sid/pid/est/ni';
  const twice = { resourceType: 'Patient', identifier: [{ system: NI, value: '37302102711' }, { system: NI, value: '44501231007' }] };
  const oo = await validate({ resourceType: 'Parameters', parameter: [{ name: 'resource', resource: twice }, { name: 'profile', valueUri: 'https://care-gateway.ee/fhir/StructureDefinition/ee-patient' }] }, 'Patient');
  expect(errors(oo).map((i) => i.expression![0])).toEqual(['Patient.identifier[1]']);
  // nothing was stored by $validate
  expect(((await (await fetch(`${base}/Patient?identifier=${NI}|44501231007`)).json()) as Bundle).entry ?? []).toHaveLength(0);
  const wrongType = await fetch(`${base}/Patient/$validate`, { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Observation' }) });
  expect(wrongType.status).toBe(422);
});

test('profiles, CodeSystems and ValueSets are served, and listed in the CapabilityStatement', async () => {
  const sds = (await (await fetch(`${base}/StructureDefinition?url=https://care-gateway.ee/fhir/StructureDefinition/shared-careplan`)).json()) as Bundle;
  const sd = sds.entry![0].resource as StructureDefinition;
  expect(sd.snapshot!.element.length).toBeGreaterThan(50);
  const vs = (await (await fetch(`${base}/ValueSet/social-services`)).json()) as ValueSet;
  expect(vs.compose!.include[0].system).toBe('https://care-gateway.ee/fhir/CodeSystem/social-services');
  const cs = (await (await fetch(`${base}/CodeSystem?url=https://care-gateway.ee/fhir/CodeSystem/social-services`)).json()) as Bundle;
  expect(cs.entry).toHaveLength(1);
  const cap = (await (await fetch(`${base}/metadata`)).json()) as CapabilityStatement;
  const carePlan = cap.rest![0].resource!.find((r) => r.type === 'CarePlan')!;
  expect(carePlan.supportedProfile).toEqual(['https://care-gateway.ee/fhir/StructureDefinition/shared-careplan']);
  expect(carePlan.operation!.map((o) => o.name)).toContain('validate');
  expect(cap.rest![0].interaction!.map((i) => i.code)).toEqual(expect.arrayContaining(['transaction', 'batch']));
});

test('the shared plan and team the assembly writes claim and pass their profiles', async () => {
  const ack = await (await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: eeDischarge({ controlId: 'VAL-1' }) })).text();
  expect(ack).toContain('MSA|AA');
  const plans = (await (await fetch(`${base}/CarePlan?_count=5`)).json()) as Bundle;
  const plan = plans.entry![0].resource as CarePlan;
  expect(plan.meta!.profile).toEqual(['https://care-gateway.ee/fhir/StructureDefinition/shared-careplan']);
  expect(errors(await validate(plan))).toEqual([]);
  const team = await (await fetch(`${base}/${plan.careTeam![0].reference}`)).json();
  expect((team as Resource).meta!.profile).toEqual(['https://care-gateway.ee/fhir/StructureDefinition/shared-careteam']);
  expect(errors(await validate(team))).toEqual([]);
});
