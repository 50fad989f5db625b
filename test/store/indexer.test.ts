/**
 * The Patient compartment a resource is indexed under (`patient_key`): from its `patient`, `subject`, `beneficiary`
 * or `for` reference to a Patient, also where those values are held by another parameter's rows (Provenance
 * `patient` is `target` pointing at a Patient).
 */
import type { Resource } from '../../src/fhir/types.js';
import { indexRows, patientKeyOf } from '../../src/store/indexer.js';

const cases: [string, Resource, string | null][] = [
  ['a Patient is its own', { resourceType: 'Patient', id: 'p1' } as Resource, 'p1'],
  ['CarePlan.subject → Patient', { resourceType: 'CarePlan', id: 'c', status: 'active', intent: 'plan', subject: { reference: 'Patient/p1' } } as Resource, 'p1'],
  ['CarePlan.subject → Group: none', { resourceType: 'CarePlan', id: 'c', status: 'active', intent: 'plan', subject: { reference: 'Group/g1' } } as Resource, null],
  [
    'Provenance.target → the Patient among the targets',
    { resourceType: 'Provenance', id: 'v', recorded: '2026-11-10T10:00:00Z', agent: [{ who: { display: 'x' } }], target: [{ reference: 'CarePlan/cp1' }, { reference: 'Patient/p2' }] } as Resource,
    'p2',
  ],
  ['Coverage.beneficiary', { resourceType: 'Coverage', id: 'k', status: 'active', beneficiary: { reference: 'Patient/p3' }, payor: [{ display: 'x' }] } as Resource, 'p3'],
  ['Task.for', { resourceType: 'Task', id: 't', status: 'requested', intent: 'order', for: { reference: 'Patient/p4' } } as Resource, 'p4'],
  ['AllergyIntolerance.patient', { resourceType: 'AllergyIntolerance', id: 'a', patient: { reference: 'Patient/p5' } } as Resource, 'p5'],
  ['an Organization has none', { resourceType: 'Organization', id: 'o' } as Resource, null],
];

test.each(cases)('%s', (_name, resource, key) => {
  expect(indexRows(resource).patientKey).toBe(key);
  expect(patientKeyOf(resource)).toBe(key);
});

test('identical rows of one resource are written once; different ones all kept, in order', () => {
  const team = {
    resourceType: 'CareTeam',
    id: 't',
    participant: [
      { member: { reference: 'Organization/elva' } },
      { member: { reference: 'Practitioner/d1' } },
      { member: { reference: 'Organization/elva' } }, // the same organisation in a second role
      { member: { reference: 'Organization/tartu' } },
    ],
    subject: { reference: 'Patient/p1' },
  } as Resource;
  expect(indexRows(team).reference.filter((r) => r.param === 'participant').map((r) => `${r.targetType}/${r.targetId}`)).toEqual([
    'Organization/elva',
    'Practitioner/d1',
    'Organization/tartu',
  ]);
  const patient = {
    resourceType: 'Patient',
    id: 'p',
    identifier: [
      { system: 'urn:a', value: '1' },
      { system: 'urn:a', value: '1' },
      { system: 'urn:b', value: '1' },
      { value: '1' },
    ],
    name: [{ family: 'Tamm' }, { family: 'Tamm' }, { family: 'TAMM' }],
  } as Resource;
  const rows = indexRows(patient);
  expect(rows.token.filter((r) => r.param === 'identifier').map((r) => `${r.system}|${r.code}`)).toEqual(['urn:a|1', 'urn:b|1', 'null|1']);
  // same normalised value, different written forms: both kept (:exact tells them apart)
  expect(rows.string.filter((r) => r.param === 'family').map((r) => r.exact)).toEqual(['Tamm', 'TAMM']);
});
