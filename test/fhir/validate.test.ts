/**
 * Validation of every write: the official R4 JSON schema, minimum cardinality from the base StructureDefinitions,
 * and invariants. Every issue comes back at once with its FHIRPath. @medplum/core's validateResource is an
 * independent second opinion on the same inputs.
 *
 * @see https://hl7.org/fhir/R4/validation.html
 */
import fs from 'node:fs';
import path from 'node:path';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import type { Bundle, CarePlan, CareTeam, Resource } from '@medplum/fhirtypes';
import { validateResource, assertValid } from '../../src/fhir/validate.js';
import { readDefinitions } from '../../src/fhir/definitions.js';
import { OutcomeError } from '../../src/fhir/outcome.js';

const CORPUS = path.resolve(process.cwd(), '../shared/corpus/fhir/r4-spec-examples');
const corpus = fs.readdirSync(CORPUS).filter((f) => f.endsWith('.json'));
const load = <T extends Resource>(f: string): T => JSON.parse(fs.readFileSync(path.join(CORPUS, f), 'utf8')) as T;
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

test.each(corpus)('the R4 example %s is valid (and @medplum/core agrees)', (f) => {
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
  const bogus = { ...load<CarePlan>('CarePlan-example.json'), status: 'bogus' } as unknown as CarePlan;
  expect(where(bogus)).toEqual(['CarePlan.status']); // (@medplum/core does not expand this binding)
  expect(where({ resourceType: 'Patient', birthDate: '10.02.1973' })).toEqual(['Patient.birthDate']);
});

test('a missing required element is found, nested ones too', () => {
  const { subject: _s, ...noSubject } = load<CarePlan>('CarePlan-example.json');
  expect(where(noSubject)).toEqual(['CarePlan.subject']);
  expect(medplumFindsErrors(noSubject as CarePlan)).toBe(true); // second opinion agrees
  expect(where({ resourceType: 'Provenance', target: [{ reference: 'Patient/1' }], recorded: '2026-01-01T00:00:00Z', agent: [{}] })).toEqual([
    'Provenance.agent[0].who',
  ]);
});

test('cpl-3: an activity with both a reference and a detail', () => {
  const cp = load<CarePlan>('CarePlan-example.json');
  const bad = { ...cp, activity: [{ reference: { reference: 'ServiceRequest/1' }, detail: { status: 'scheduled' } }] } as CarePlan;
  const issues = errorsOf(bad);
  expect(issues.map((i) => i.expression)).toContainEqual(['CarePlan.activity[0]']);
  expect(issues.some((i) => i.diagnostics?.startsWith('cpl-3'))).toBe(true);
});

test('ctm-1: onBehalfOf for a member who is not a Practitioner', () => {
  const ct = load<CareTeam>('CareTeam-example.json');
  const bad = { ...ct, participant: [{ member: { reference: 'Patient/example' }, onBehalfOf: { reference: 'Organization/f001' } }] } as CareTeam;
  expect(where(bad)).toEqual(['CareTeam.participant[0]']);
});

test('per-1: a period that ends before it starts, wherever it is', () => {
  const cp = { ...load<CarePlan>('CarePlan-example.json'), period: { start: '2026-05-01', end: '2026-04-01' } };
  expect(where(cp)).toContain('CarePlan.period');
});

test('a choice element with two values (deceasedBoolean and deceasedDateTime) is refused', () => {
  expect(where({ resourceType: 'Patient', deceasedBoolean: true, deceasedDateTime: '2020-01-01' })).toEqual(['Patient.deceasedDateTime']);
});

test('several problems are all reported at once', () => {
  const r = { resourceType: 'CarePlan', status: 'bogus', intent: 'plan', foo: true, period: { start: '2026-05-01', end: '2026-01-01' } };
  expect(where(r).sort()).toEqual(['CarePlan.foo', 'CarePlan.period', 'CarePlan.status', 'CarePlan.subject']);
});

test('a contained resource is validated on its own, with its path', () => {
  const r = { resourceType: 'CareTeam', contained: [{ resourceType: 'Practitioner', id: 'p1', gender: 'x' }] };
  expect(where(r)).toEqual(['CareTeam.contained[0].gender']);
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
