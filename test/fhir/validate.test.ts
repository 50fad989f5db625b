/**
 * Validation of every write: the official R4 JSON schema, minimum cardinality from the base StructureDefinitions,
 * and invariants. Every issue comes back at once with its FHIRPath. @medplum/core's validateResource is an
 * independent second opinion on the same inputs. The R4 examples of the shared corpus are checked when it is there
 * (CG_CORPUS_DIR); the tests that break a valid plan or team start from our own (test/fixtures/fhir).
 *
 * @see https://hl7.org/fhir/R4/validation.html
 */
import fs from 'node:fs';
import path from 'node:path';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import type { Bundle, CarePlan, CareTeam, Resource } from '@medplum/fhirtypes';
import { validateResource, assertValid, invariantTable, pointerToFhirPath } from '../../src/fhir/validate.js';
import { readDefinitions } from '../../src/fhir/definitions.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { corpusFiles, describeCorpus, requireCorpusDir } from '../helpers/corpus.js';

const EXAMPLES = 'fhir/r4-spec-examples';
const FIXTURES = path.resolve(process.cwd(), 'test/fixtures/fhir');
const read = <T extends Resource>(dir: string, f: string): T => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as T;
/** A plan and a team of our own (test/fixtures/fhir), valid, to break in the tests below. */
const load = <T extends Resource>(f: string): T => read<T>(FIXTURES, f);
const errorsOf = (r: unknown) => validateResource(r).filter((i) => i.severity === 'error');
const where = (r: unknown) => errorsOf(r).flatMap((i) => i.expression ?? []);
/** @medplum/core reports some problems as issues and throws on others */
const medplumFindsErrors = (r: Resource): boolean => {
  try {
    return medplumValidate(r).some((i) => i.severity === 'error');
  } catch {
    return true;
  }
};

beforeAll(() => {
  indexStructureDefinitionBundle(readDefinitions<Bundle>('profiles-types.json'));
  indexStructureDefinitionBundle(readDefinitions<Bundle>('profiles-resources.json'));
});

describeCorpus(EXAMPLES, 'the R4 examples of the shared corpus', () => {
  test.each(corpusFiles(EXAMPLES, '.json'))('the R4 example %s is valid (and @medplum/core agrees)', (f) => {
    const r = read(requireCorpusDir(EXAMPLES), f);
    expect(errorsOf(r)).toEqual([]);
    expect(medplumFindsErrors(r)).toBe(false);
  });
});

test.each(fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.json')).sort())('our fixture %s is valid (and @medplum/core agrees)', (f) => {
  const r = load(f);
  expect(errorsOf(r)).toEqual([]);
  expect(medplumFindsErrors(r)).toBe(false);
});

test('an unknown element is reported at its path', () => {
  expect(where({ resourceType: 'Patient', foo: 1 })).toEqual(['Patient.foo']);
  expect(medplumFindsErrors({ resourceType: 'Patient', foo: 1 } as Resource)).toBe(true); // second opinion agrees
});

test('a wrong type, a bad code and a bad date format are each reported', () => {
  expect(where({ resourceType: 'Patient', birthDate: 19730210 })).toEqual(['Patient.birthDate']);
  const bogus = { ...load<CarePlan>('CarePlan-home-rehab.json'), status: 'bogus' } as unknown as CarePlan;
  expect(where(bogus)).toEqual(['CarePlan.status']); // (@medplum/core does not expand this binding)
  expect(where({ resourceType: 'Patient', birthDate: '10.02.1973' })).toEqual(['Patient.birthDate']);
});

test('a missing required element is found, nested ones too', () => {
  const { subject: _s, ...noSubject } = load<CarePlan>('CarePlan-home-rehab.json');
  expect(where(noSubject)).toEqual(['CarePlan.subject']);
  expect(medplumFindsErrors(noSubject as CarePlan)).toBe(true); // second opinion agrees
  const agent = [{ type: { text: 'author' } }];
  expect(where({ resourceType: 'Provenance', target: [{ reference: 'Patient/1' }], recorded: '2026-01-01T00:00:00Z', agent })).toEqual([
    'Provenance.agent[0].who',
  ]);
  expect(where({ resourceType: 'Provenance' }).sort()).toEqual(['Provenance.agent', 'Provenance.recorded', 'Provenance.target']);
  // status and intent are primitives with no `required` in the JSON schema: the StructureDefinition layer finds them
  const { status: _st, intent: _in, ...noCodes } = load<CarePlan>('CarePlan-home-rehab.json');
  expect(where(noCodes).sort()).toEqual(['CarePlan.intent', 'CarePlan.status']);
  expect(medplumFindsErrors(noCodes as CarePlan)).toBe(true);
  // a primitive given only as an extension (`_status`) is present
  const extOnly = { ...noCodes, intent: 'plan', _status: { extension: [{ url: 'http://example.org/x', valueString: 'y' }] } };
  expect(where(extOnly)).toEqual([]);
  // min ≥ 1 inside data types: Extension.url
  expect(where({ resourceType: 'Patient', extension: [{ valueString: 'x' }] })).toEqual(['Patient.extension[0].url']);
});

test('an element with neither value nor children (ele-1)', () => {
  const issues = errorsOf({ resourceType: 'Patient', name: [{}] });
  expect(issues.map((i) => [i.expression?.[0], i.diagnostics?.slice(0, 6)])).toEqual([['Patient.name[0]', 'ele-1:']]);
});

test('cpl-3: an activity with both a reference and a detail', () => {
  const cp = load<CarePlan>('CarePlan-home-rehab.json');
  const bad = { ...cp, activity: [{ reference: { reference: 'ServiceRequest/1' }, detail: { status: 'scheduled' } }] } as CarePlan;
  const issues = errorsOf(bad);
  expect(issues.map((i) => i.expression)).toContainEqual(['CarePlan.activity[0]']);
  expect(issues.some((i) => i.diagnostics?.startsWith('cpl-3'))).toBe(true);
});

test('ctm-1: onBehalfOf for a member who is not a Practitioner', () => {
  const ct = load<CareTeam>('CareTeam-home-rehab.json');
  // the fixture's own participant[1] is a contained Practitioner with onBehalfOf: fine
  const bad = { ...ct, participant: [...ct.participant!, { member: { reference: 'Patient/example' }, onBehalfOf: { reference: 'Organization/f001' } }] } as CareTeam;
  const issues = errorsOf(bad);
  expect(issues.map((i) => i.expression?.[0])).toEqual(['CareTeam.participant[2]']);
  expect(issues[0].diagnostics).toBe('ctm-1: CareTeam.participant.onBehalfOf can only be populated when CareTeam.participant.member is a Practitioner');
  // a member that cannot be resolved (identifier only, urn:uuid) passes, as the FHIRPath iif(empty(), true, …) says
  const unresolved = { ...ct, participant: [...ct.participant!, { member: { display: 'Someone' }, onBehalfOf: { reference: 'Organization/f001' } }] };
  expect(where(unresolved)).toEqual([]);
});

test('pat-1, prr-1 (orderDetail only with code), ref-1 and ext-1', () => {
  expect(where({ resourceType: 'Patient', contact: [{ gender: 'female' }] })).toEqual(['Patient.contact[0]']);
  const sr = { resourceType: 'ServiceRequest', status: 'active', intent: 'order', subject: { reference: 'Patient/1' }, orderDetail: [{ text: 'x' }] };
  expect(errorsOf(sr).map((i) => [i.expression?.[0], i.diagnostics?.slice(0, 5)])).toEqual([['ServiceRequest.orderDetail', 'prr-1']]);
  expect(where({ ...sr, code: { text: 'Physiotherapy' } })).toEqual([]);
  const cp = { resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: { reference: '#missing' } };
  expect(errorsOf(cp).map((i) => [i.expression?.[0], i.diagnostics?.slice(0, 6)])).toEqual([['CarePlan.subject', 'ref-1:']]);
  const ext = { resourceType: 'Patient', extension: [{ url: 'http://example.org/a', valueString: 'x', extension: [{ url: 'b', valueCode: 'c' }] }] };
  expect(errorsOf(ext).map((i) => [i.expression?.[0], i.diagnostics?.slice(0, 6)])).toEqual([['Patient.extension[0]', 'ext-1:']]);
});

test('dom-2, dom-3, dom-4: rules for contained resources', () => {
  const base = { resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: { reference: 'Patient/1' } };
  const unreferenced = { ...base, contained: [{ resourceType: 'Goal', id: 'g1', lifecycleStatus: 'active', description: { text: 'x' }, subject: { reference: 'Patient/1' } }] };
  expect(where(unreferenced)).toEqual(['CarePlan.contained[0]']);
  expect(where({ ...unreferenced, goal: [{ reference: '#g1' }] })).toEqual([]);
  // a contained resource that points at its container is fine
  const back = { ...base, contained: [{ resourceType: 'Goal', id: 'g1', lifecycleStatus: 'active', description: { text: 'x' }, subject: { reference: '#' } }] };
  expect(where(back)).toEqual([]);
  const nested = {
    ...base,
    goal: [{ reference: '#g1' }],
    contained: [{ ...unreferenced.contained[0], meta: { versionId: '2' }, contained: [{ resourceType: 'Patient', id: 'p' }] }],
  };
  const issues = errorsOf(nested).map((i) => `${i.diagnostics?.slice(0, 5)} ${i.expression?.[0]}`);
  expect(issues).toEqual(expect.arrayContaining(['dom-2 CarePlan.contained[0].contained', 'dom-4 CarePlan.contained[0].meta.versionId']));
});

test('per-1: a period that ends before it starts, wherever it is', () => {
  const cp = { ...load<CarePlan>('CarePlan-home-rehab.json'), period: { start: '2026-05-01', end: '2026-04-01' } };
  expect(where(cp)).toEqual(['CarePlan.period']);
  expect(errorsOf(cp)[0].diagnostics).toBe('per-1: If present, start SHALL have a lower value than end');
  // inside a data type, inside an extension, and inside a backbone element
  const patient = {
    resourceType: 'Patient',
    identifier: [{ value: '1', period: { start: '2020-01-02', end: '2020-01-01' } }],
    extension: [{ url: 'http://example.org/stay', valuePeriod: { start: '2021-01-01T10:00:00Z', end: '2021-01-01T09:00:00Z' } }],
    contact: [{ name: { text: 'Kati' }, period: { start: '2022', end: '2021' } }],
  };
  expect(where(patient).sort()).toEqual(['Patient.contact[0].period', 'Patient.extension[0].valuePeriod', 'Patient.identifier[0].period']);
  // partial dates that overlap do not violate it (FHIRPath gives no answer); equal instants are fine
  expect(where({ resourceType: 'Patient', identifier: [{ period: { start: '2020-03-15', end: '2020-03' } }] })).toEqual([]);
  expect(where({ resourceType: 'Patient', identifier: [{ period: { start: '2020-03-15T10:00:00+02:00', end: '2020-03-15T08:00:00Z' } }] })).toEqual([]);
});

test('id format and meta shape are checked by the schema', () => {
  expect(where({ resourceType: 'Patient', id: 'has space' })).toEqual(['Patient.id']);
  expect(where({ resourceType: 'Patient', meta: { lastUpdated: 'yesterday', tag: {} } }).sort()).toEqual(['Patient.meta.lastUpdated', 'Patient.meta.tag']);
  expect(where({ resourceType: 'Patient', gender: 'x' })[0]).toBe('Patient.gender');
  expect(errorsOf({ resourceType: 'Patient', gender: 'x' })[0].diagnostics).toContain('male | female | other | unknown');
});

test('resources inside a Bundle are validated with their own paths', () => {
  const bundle = {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [{ resource: { resourceType: 'Patient', foo: 1 } }, { resource: { resourceType: 'CarePlan', status: 'active', intent: 'plan' } }, { resource: { resourceType: 'Nope' } }],
  };
  expect(where(bundle)).toEqual(['Bundle.entry[0].resource.foo', 'Bundle.entry[1].resource.subject', 'Bundle.entry[2].resource.resourceType']);
});

test('instance paths become FHIRPath', () => {
  expect(pointerToFhirPath('Patient', '/name/0/given/1')).toBe('Patient.name[0].given[1]');
  expect(pointerToFhirPath('Patient', '')).toBe('Patient');
});

test('the invariant table carries the StructureDefinitions\' own texts', () => {
  const byKey = new Map(invariantTable().map((i) => [i.key, i]));
  expect([...byKey.keys()].sort()).toEqual(['cpl-3', 'ctm-1', 'dom-2', 'dom-3', 'dom-4', 'dom-5', 'ele-1', 'ext-1', 'pat-1', 'per-1', 'prr-1', 'ref-1']);
  const bundle = readDefinitions<Bundle>('profiles-resources.json');
  const sr = bundle.entry!.map((e) => e.resource as unknown as { id: string; snapshot: { element: { constraint?: { key: string; human: string }[] }[] } }).find((r) => r.id === 'ServiceRequest')!;
  const human = sr.snapshot.element.flatMap((e) => e.constraint ?? []).find((c) => c.key === 'prr-1')!.human;
  expect(byKey.get('prr-1')!.human).toBe(human);
  expect(byKey.get('cpl-3')!.human).toBe('Provide a reference or detail, not both');
});

test('a choice element with two values (deceasedBoolean and deceasedDateTime) is refused', () => {
  expect(where({ resourceType: 'Patient', deceasedBoolean: true, deceasedDateTime: '2020-01-01' })).toEqual(['Patient.deceasedDateTime']);
});

test('several problems are all reported at once', () => {
  const r = {
    resourceType: 'CarePlan',
    status: 'bogus',
    intent: 'plan',
    foo: true,
    created: 20260101,
    period: { start: '2026-05-01', end: '2026-01-01' },
    activity: [{ reference: { reference: 'ServiceRequest/1' }, detail: { status: 'scheduled' } }],
  };
  expect(where(r).sort()).toEqual(['CarePlan.activity[0]', 'CarePlan.created', 'CarePlan.foo', 'CarePlan.period', 'CarePlan.status', 'CarePlan.subject']);
  expect(medplumFindsErrors(r as unknown as Resource)).toBe(true);
});

test('a contained resource is validated on its own, with its path', () => {
  const r = { resourceType: 'CareTeam', contained: [{ resourceType: 'Practitioner', id: 'p1', gender: 'x' }], participant: [{ member: { reference: '#p1' } }] };
  expect(where(r)).toEqual(['CareTeam.contained[0].gender']);
  expect(where({ ...r, contained: [{ resourceType: 'Practitioner', id: 'p1', name: [{ family: 'A', foo: 1 }] }] })).toEqual(['CareTeam.contained[0].name[0].foo']);
});

test('a wrong resourceType or a non-object is refused', () => {
  expect(where({ resourceType: 'Patiënt' })).toEqual(['resourceType']);
  expect(validateResource([1, 2])[0].code).toBe('structure');
});

test('assertValid throws one OutcomeError with every issue', () => {
  expect(() => assertValid({ resourceType: 'Patient', foo: 1, gender: 'x' })).toThrow(OutcomeError);
  try {
    assertValid({ resourceType: 'Patient', foo: 1, gender: 'x' });
  } catch (e) {
    expect((e as OutcomeError).outcome.issue).toHaveLength(2);
  }
});
