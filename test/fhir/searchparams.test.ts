/**
 * The official R4 SearchParameters, split per resource type, and the index rows extracted from resources with
 * @medplum/core's FHIRPath evaluator.
 *
 * @see https://hl7.org/fhir/R4/searchparameter-registry.html
 * @see https://hl7.org/fhir/R4/search.html#ptypes
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CarePlan, CareTeam, Encounter, Patient, Provenance, Resource } from '@medplum/fhirtypes';
import { extractSearchValues, instantRange, normalizeString, searchParamsFor, splitReference, type SearchValues } from '../../src/fhir/searchparams.js';
import { corpusFiles, requireCorpusDir, testCorpus } from '../helpers/corpus.js';

const rows = <K extends keyof SearchValues>(v: SearchValues, kind: K, param: string): Omit<SearchValues[K][number], 'param'>[] =>
  (v[kind] as SearchValues[K][number][]).filter((r) => r.param === param).map(({ param: _p, ...rest }) => rest);

/** The values of `patient`: the rows of the parameter that holds them (`subject`), those pointing at a Patient. */
const patientValues = (v: SearchValues, resourceType: string): Omit<SearchValues['reference'][number], 'param'>[] => {
  const def = searchParamsFor(resourceType)!.get('patient')!;
  return rows(v, 'reference', def.indexedAs ?? 'patient').filter((r) => !def.indexedTargetType || r.targetType === def.indexedTargetType);
};

const patient: Patient = {
  resourceType: 'Patient',
  id: 'p1',
  identifier: [{ system: 'https://fhir.ee/sid/pid/est/ni', value: '37302102711' }],
  name: [{ use: 'official', family: 'Õunapuu', given: ['Tõnu', 'Jüri'], prefix: ['Hr'] }],
  gender: 'male',
  birthDate: '1973-02-10',
  telecom: [{ system: 'phone', value: '+3725551234' }],
  address: [{ line: ['Kesk tn 1'], city: 'Elva', postalCode: '61507', country: 'EE' }],
  generalPractitioner: [
    { reference: 'Practitioner/D12345' },
    { reference: 'https://other.example.org/fhir/Organization/9' }, // another server: not indexed
    { reference: 'urn:uuid:0b8c6c1e-7d1e-4a1c-9c55-1f4b8d2f1d11' },
  ],
  active: true,
};

test('searchParamsFor splits multi-type expressions and adds the Resource-level parameters', () => {
  const cp = searchParamsFor('CarePlan')!;
  expect(cp.get('patient')).toMatchObject({ type: 'reference', expression: 'CarePlan.subject.where(resolve() is Patient)' });
  expect(cp.get('patient')!.targets).toContain('Patient');
  expect(cp.get('subject')).toMatchObject({ type: 'reference', expression: 'CarePlan.subject' });
  expect(cp.get('status')).toMatchObject({ type: 'token', expression: 'CarePlan.status' });
  expect(cp.get('date')).toMatchObject({ type: 'date', expression: 'CarePlan.period' });
  expect(cp.get('_id')).toMatchObject({ type: 'token', expression: 'CarePlan.id' });
  expect(searchParamsFor('Encounter')!.get('_lastUpdated')).toMatchObject({ type: 'date', expression: 'Encounter.meta.lastUpdated' });
  expect(searchParamsFor('Patient')!.get('birthdate')!.expression).toBe('Patient.birthDate');
  // the clinical-patient parameter is split: no other type's part is left in any of them
  for (const t of ['CarePlan', 'CareTeam', 'Encounter', 'Provenance', 'Patient']) {
    for (const def of searchParamsFor(t)!.values()) {
      for (const part of def.expression.split(' | ')) expect(part.replace(/^\(+/, '').startsWith(`${t}.`) || part === '').toBe(true);
    }
  }
  expect(searchParamsFor('NotAType')).toBeUndefined();
});

test('a parameter identical to another (phonetic = name) is indexed once, under the first code', () => {
  for (const t of ['Patient', 'Practitioner', 'RelatedPerson']) {
    const defs = searchParamsFor(t)!;
    expect(defs.get('phonetic')!.expression).toBe(defs.get('name')!.expression);
    expect(defs.get('phonetic')!.indexedAs).toBe('name');
    expect(defs.get('name')!.indexedAs).toBeUndefined();
  }
  // different expressions keep their own rows
  expect(searchParamsFor('Patient')!.get('family')!.indexedAs).toBeUndefined();
  const v = extractSearchValues(patient);
  expect(rows(v, 'string', 'phonetic')).toEqual([]);
  expect(rows(v, 'string', 'name').length).toBe(4);
});

test('patient = subject.where(resolve() is Patient) is read from subject rows pointing at a Patient', () => {
  for (const t of ['CarePlan', 'CareTeam', 'Observation', 'Condition', 'Encounter', 'ServiceRequest', 'Task']) {
    expect(searchParamsFor(t)!.get('patient')).toMatchObject({ indexedAs: 'subject', indexedTargetType: 'Patient' });
  }
  expect(searchParamsFor('Provenance')!.get('patient')).toMatchObject({ indexedAs: 'target', indexedTargetType: 'Patient' });
  // AllergyIntolerance.patient is an element of its own, not a restriction of another parameter
  expect(searchParamsFor('AllergyIntolerance')!.get('patient')!.indexedAs).toBeUndefined();
  const v = extractSearchValues({ resourceType: 'CarePlan', id: 'x', status: 'active', intent: 'plan', subject: { reference: 'Patient/p1' } } as Resource);
  expect(rows(v, 'reference', 'patient')).toEqual([]);
  expect(rows(v, 'reference', 'subject')).toEqual([{ targetType: 'Patient', targetId: 'p1' }]);
});

test('Patient: identifier, name, family, birthdate, gender, general-practitioner', () => {
  const v = extractSearchValues(patient);
  expect(rows(v, 'token', 'identifier')).toEqual([{ system: 'https://fhir.ee/sid/pid/est/ni', code: '37302102711' }]);
  // one row per value: normalised for the default match, as written (NFC) for :exact
  expect(rows(v, 'string', 'family')).toEqual([{ value: 'ounapuu', exact: 'Õunapuu' }]);
  expect(v.string.filter((r) => r.param.endsWith(':exact'))).toEqual([]);
  expect(rows(v, 'string', 'given').map((r) => r.value)).toEqual(['tonu', 'juri']);
  expect(rows(v, 'string', 'name').map((r) => r.value).sort()).toEqual(['hr', 'juri', 'ounapuu', 'tonu']);
  expect(rows(v, 'string', 'address').map((r) => r.value).sort()).toEqual(['61507', 'ee', 'elva', 'kesk tn 1']);
  expect(rows(v, 'date', 'birthdate')).toEqual([{ low: '1973-02-10T00:00:00.000Z', high: '1973-02-10T23:59:59.999Z' }]);
  expect(rows(v, 'token', 'gender')).toEqual([{ system: null, code: 'male' }]);
  expect(rows(v, 'token', 'active')).toEqual([{ system: null, code: 'true' }]);
  expect(rows(v, 'token', 'phone')).toEqual([{ system: 'phone', code: '+3725551234' }]);
  expect(rows(v, 'reference', 'general-practitioner')).toEqual([{ targetType: 'Practitioner', targetId: 'D12345' }]);
});

const carePlan: CarePlan = {
  resourceType: 'CarePlan',
  id: 'cp1',
  status: 'active',
  intent: 'plan',
  category: [{ coding: [{ system: 'http://snomed.info/sct', code: '736353004' }] }],
  subject: { reference: 'Patient/p1' },
  period: { start: '2026-11-10', end: '2027-05' },
  careTeam: [{ reference: 'CareTeam/ct1' }],
  activity: [{ reference: { reference: 'ServiceRequest/sr1' } }, { detail: { status: 'scheduled', scheduledPeriod: { start: '2026-12-01T09:00:00+02:00' } } }],
};

test('CarePlan: patient, subject, care-team, status, category, date, activity-reference, activity-date', () => {
  const v = extractSearchValues(carePlan);
  expect(patientValues(v, 'CarePlan')).toEqual([{ targetType: 'Patient', targetId: 'p1' }]);
  expect(rows(v, 'reference', 'subject')).toEqual([{ targetType: 'Patient', targetId: 'p1' }]);
  expect(rows(v, 'reference', 'care-team')).toEqual([{ targetType: 'CareTeam', targetId: 'ct1' }]);
  expect(rows(v, 'token', 'status')).toEqual([{ system: null, code: 'active' }]);
  expect(rows(v, 'token', 'category')).toEqual([{ system: 'http://snomed.info/sct', code: '736353004' }]);
  expect(rows(v, 'date', 'date')).toEqual([{ low: '2026-11-10T00:00:00.000Z', high: '2027-05-31T23:59:59.999Z' }]);
  expect(rows(v, 'reference', 'activity-reference')).toEqual([{ targetType: 'ServiceRequest', targetId: 'sr1' }]);
  expect(rows(v, 'date', 'activity-date')).toEqual([{ low: '2026-12-01T07:00:00.000Z', high: 'infinity' }]);
});

test('`where(resolve() is Patient)` works on typed references without a server', () => {
  const forGroup = extractSearchValues({ ...carePlan, subject: { reference: 'Group/g1' } });
  expect(patientValues(forGroup, 'CarePlan')).toEqual([]);
  expect(rows(forGroup, 'reference', 'subject')).toEqual([{ targetType: 'Group', targetId: 'g1' }]);
});

test('CareTeam: participant, patient, status', () => {
  const ct: CareTeam = {
    resourceType: 'CareTeam',
    status: 'active',
    subject: { reference: 'Patient/p1' },
    participant: [{ member: { reference: 'Practitioner/D12345' } }, { member: { reference: 'RelatedPerson/kati' } }, { member: { reference: '#x' } }],
  };
  const v = extractSearchValues(ct);
  expect(rows(v, 'reference', 'participant')).toEqual([
    { targetType: 'Practitioner', targetId: 'D12345' },
    { targetType: 'RelatedPerson', targetId: 'kati' },
  ]);
  expect(patientValues(v, 'CareTeam')).toEqual([{ targetType: 'Patient', targetId: 'p1' }]);
  expect(rows(v, 'token', 'status')).toEqual([{ system: null, code: 'active' }]);
});

test('Provenance: target, agent, recorded', () => {
  const p: Provenance = {
    resourceType: 'Provenance',
    target: [{ reference: 'CarePlan/cp1/_history/3' }, { reference: 'Patient/p1' }],
    recorded: '2026-11-10T12:00:00.123+02:00',
    agent: [{ who: { reference: 'Device/gateway' } }],
  };
  const v = extractSearchValues(p);
  expect(rows(v, 'reference', 'target')).toEqual([
    { targetType: 'CarePlan', targetId: 'cp1' },
    { targetType: 'Patient', targetId: 'p1' },
  ]);
  expect(rows(v, 'reference', 'agent')).toEqual([{ targetType: 'Device', targetId: 'gateway' }]);
  expect(rows(v, 'date', 'recorded')).toEqual([{ low: '2026-11-10T10:00:00.123Z', high: '2026-11-10T10:00:00.123Z' }]);
  expect(patientValues(v, 'Provenance')).toEqual([{ targetType: 'Patient', targetId: 'p1' }]);
});

test('Encounter: patient, status, date, class', () => {
  const e: Encounter = {
    resourceType: 'Encounter',
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    subject: { reference: 'Patient/p1' },
    period: { start: '2026-11-01T10:00:00', end: '2026-11-10T12:00:00Z' },
  };
  const v = extractSearchValues(e);
  expect(patientValues(v, 'Encounter')).toEqual([{ targetType: 'Patient', targetId: 'p1' }]);
  expect(rows(v, 'token', 'status')).toEqual([{ system: null, code: 'finished' }]);
  expect(rows(v, 'token', 'class')).toEqual([{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' }]);
  // without an offset the time is taken as UTC
  expect(rows(v, 'date', 'date')).toEqual([{ low: '2026-11-01T10:00:00.000Z', high: '2026-11-10T12:00:00.999Z' }]);
});

test('dates, references and strings are normalised', () => {
  expect(instantRange('2024-03')).toEqual(['2024-03-01T00:00:00.000Z', '2024-03-31T23:59:59.999Z']);
  expect(instantRange('2024')).toEqual(['2024-01-01T00:00:00.000Z', '2024-12-31T23:59:59.999Z']);
  expect(instantRange('2024-02-29')).toEqual(['2024-02-29T00:00:00.000Z', '2024-02-29T23:59:59.999Z']);
  expect(instantRange('2024-03-01T01:30:00+02:00')).toEqual(['2024-02-29T23:30:00.000Z', '2024-02-29T23:30:00.999Z']);
  expect(instantRange('1.3.2024')).toBeUndefined();
  expect(splitReference('Patient/1')).toEqual(['Patient', '1']);
  expect(splitReference('Patient/1/_history/2')).toEqual(['Patient', '1']);
  expect(splitReference('http://elsewhere.example.org/fhir/Patient/1')).toBeUndefined();
  expect(splitReference('#p1')).toBeUndefined();
  expect(splitReference('urn:uuid:0b8c6c1e-7d1e-4a1c-9c55-1f4b8d2f1d11')).toBeUndefined();
  expect(splitReference('Nope/1')).toBeUndefined();
  // shapes that are not a plain `Type/id` (with an optional version) are not index rows
  for (const bad of ['Patient', '/1', 'Patient/', 'Patient/1/', 'Patient/1/x', 'Patient/1/_history/', 'Patient/1/_history/2/x', 'Patient/1/_history/2/_history/3', 'Patient/1 2', 'Patient/' + 'x'.repeat(65)]) {
    expect([bad, splitReference(bad)]).toEqual([bad, undefined]);
  }
  expect(splitReference('Patient/a-B.9/_history/x1')).toEqual(['Patient', 'a-B.9']);
  expect(normalizeString('  Õunapuu-Šmidt ')).toBe('ounapuu-smidt');
});

/** The direct path walk and the FHIRPath engine give the same rows, and some. */
const sameRowsBothWays = (r: Resource) => {
  const fast = extractSearchValues(r);
  expect(fast).toEqual(extractSearchValues(r, { fhirPathOnly: true }));
  expect(Object.values(fast).flat().length).toBeGreaterThan(0);
};

test('the direct path walk and the FHIRPath engine give the same rows (the resources above and our fixtures)', () => {
  const fixtures = ['CarePlan-home-rehab.json', 'CareTeam-home-rehab.json'].map((f) => JSON.parse(fs.readFileSync(path.resolve('test/fixtures/fhir', f), 'utf8')) as Resource);
  for (const r of [patient, carePlan, ...fixtures]) sameRowsBothWays(r);
});

testCorpus('fhir/r4-spec-examples', 'the direct path walk and the FHIRPath engine give the same rows (the R4 examples of the shared corpus)', () => {
  const dir = requireCorpusDir('fhir/r4-spec-examples');
  for (const f of corpusFiles('fhir/r4-spec-examples', '.json')) sameRowsBothWays(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Resource);
});

test('the FHIRPath shapes walked directly: where(resolve() is T), where(system=…), as(T) and (x as T) pick only their own values', () => {
  const person: Patient = {
    ...patient,
    telecom: [
      { system: 'phone', value: '+3725551234' },
      { system: 'email', value: 'tonu@example.ee' },
    ],
    deceasedDateTime: '2026-11-20T08:00:00Z',
  };
  const p = extractSearchValues(person);
  expect(rows(p, 'token', 'email')).toEqual([{ system: 'email', code: 'tonu@example.ee' }]);
  expect(rows(p, 'token', 'phone')).toEqual([{ system: 'phone', code: '+3725551234' }]);
  expect(rows(p, 'date', 'death-date')).toEqual([{ low: '2026-11-20T08:00:00.000Z', high: '2026-11-20T08:00:00.999Z' }]);

  // onset[x]: a dateTime is a date, not also an "onset-info" string or a second date row
  const withDate = extractSearchValues({ resourceType: 'Condition', id: 'c1', subject: { reference: 'Patient/p1' }, onsetDateTime: '2026-11-01' } as Resource);
  expect(rows(withDate, 'date', 'onset-date')).toEqual([{ low: '2026-11-01T00:00:00.000Z', high: '2026-11-01T23:59:59.999Z' }]);
  expect(rows(withDate, 'string', 'onset-info')).toEqual([]);
  expect(patientValues(withDate, 'Condition')).toEqual([{ targetType: 'Patient', targetId: 'p1' }]);
  const withText = extractSearchValues({ resourceType: 'Condition', id: 'c2', subject: { reference: 'Group/g1' }, onsetString: 'Lapsepõlves' } as Resource);
  expect(rows(withText, 'string', 'onset-info').map((r) => r.value)).toContain('lapsepolves');
  expect(rows(withText, 'date', 'onset-date')).toEqual([]);
  // the subject is a Group: `patient` (subject.where(resolve() is Patient)) has no row, `subject` has
  expect(patientValues(withText, 'Condition')).toEqual([]);
  expect(rows(withText, 'reference', 'subject')).toEqual([{ targetType: 'Group', targetId: 'g1' }]);

  const obs = extractSearchValues({
    resourceType: 'Observation',
    id: 'o1',
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
    valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    component: [{ code: { text: 'x' }, valueCodeableConcept: { text: 'Normaalne', coding: [{ system: 'urn:x', code: 'N' }] } }],
  } as Resource);
  expect(rows(obs, 'quantity', 'value-quantity')).toEqual([{ value: 72, system: 'http://unitsofmeasure.org', code: '/min' }]);
  expect(rows(obs, 'token', 'component-value-concept')).toEqual([{ system: 'urn:x', code: 'N' }]);
  expect(rows(obs, 'token', 'value-concept')).toEqual([]);
});

test('instantRange: the written-as-is shapes give exactly what the Date arithmetic gives', () => {
  // the general path, as a reference: every value through Date.UTC / Date.parse
  const viaDate = (v: string): [string, string] | undefined => {
    const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2}))?$/.exec(v)!;
    const [, y, mo, d, h, mi, s, frac, tz] = m;
    if (h === undefined) {
      const low = Date.UTC(Number(y), Number(mo) - 1, Number(d));
      const high = Date.UTC(Number(y), Number(mo) - 1, Number(d) + 1) - 1;
      return Number.isNaN(low) ? undefined : [new Date(low).toISOString(), new Date(high).toISOString()];
    }
    const t = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${s}${frac ?? ''}${tz}`);
    return Number.isNaN(t) ? undefined : [new Date(t).toISOString(), new Date(t + (frac ? 0 : 999)).toISOString()];
  };
  let checked = 0;
  for (const y of ['1000', '1973', '2026', '9999']) {
    for (let mo = 0; mo <= 13; mo++) {
      for (let d = 0; d <= 32; d++) {
        for (const t of ['', 'T00:00:00Z', 'T23:59:59Z', 'T12:34:56.789Z', 'T12:34:56.7Z', 'T24:00:00Z', 'T12:60:00Z', 'T12:34:60Z', 'T10:00:00+02:00']) {
          const v = `${y}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}${t}`;
          expect([v, instantRange(v)]).toEqual([v, viaDate(v)]);
          checked++;
        }
      }
    }
  }
  expect(checked).toBe(4 * 14 * 33 * 9);
});
