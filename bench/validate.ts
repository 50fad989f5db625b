/**
 * Validation and search-indexing cost per resource, warm, on one core: the R4 JSON schema (one ajv validator per
 * type) + StructureDefinition cardinality/bindings + invariants (src/fhir/validate.ts), and the extraction of search
 * index rows from the official SearchParameters (src/fhir/searchparams.ts). Also the one-time costs: loading the
 * definitions and compiling each type's validator on first use.
 *
 * Run: `npm run bench -- validate` (or, compiled, `node dist/bench/validate.js`).
 * @see https://hl7.org/fhir/R4/validation.html
 */
import { fileURLToPath } from 'node:url';
import type { CarePlan, Patient } from '@medplum/fhirtypes';
import { prepareValidation, validateResource } from '../src/fhir/validate.js';
import { extractSearchValues, searchParamsFor } from '../src/fhir/searchparams.js';
import { checkResource } from '../src/write-checks.js';
import { line, opsPerSecond } from './timing.js';

/** A realistic shared care plan of an integrated health and social care pathway (~2.4 KB of JSON). */
export const benchCarePlan: CarePlan = {
  resourceType: 'CarePlan',
  id: 'cp-7d1e2f',
  meta: { versionId: '3', lastUpdated: '2026-11-10T12:00:00.000Z', profile: ['https://example.org/fhir/StructureDefinition/some-other-plan'] },
  identifier: [{ system: 'https://care-gateway.ee/fhir/sid/care-plan', value: 'CP-2026-000417' }],
  status: 'active',
  intent: 'plan',
  category: [
    { coding: [{ system: 'http://snomed.info/sct', code: '736353004', display: 'Inpatient care plan' }] },
    { coding: [{ system: 'https://care-gateway.ee/fhir/CodeSystem/plan-kind', code: 'integrated', display: 'Integrated health and social care' }] },
  ],
  title: 'Koduhooldus pärast insulti',
  description: 'Shared plan after discharge: home care, physiotherapy and follow-up with the family doctor.',
  subject: { reference: 'Patient/p-37302102711', display: 'Tõnu Õunapuu' },
  encounter: { reference: 'Encounter/e-V1234' },
  period: { start: '2026-11-10', end: '2027-05-10' },
  created: '2026-11-10T12:00:00+02:00',
  author: { reference: 'Practitioner/D12345', display: 'Dr Piret Perearst' },
  contributor: [{ reference: 'Practitioner/D99876', display: 'Dr Andres Arst' }, { reference: 'RelatedPerson/rp-kati', display: 'Kati Õunapuu' }],
  careTeam: [{ reference: 'CareTeam/ct-7d1e2f' }],
  supportingInfo: [{ reference: 'DocumentReference/dr-epikriis', display: 'Epikriis' }, { reference: 'QuestionnaireResponse/qr-needs' }],
  addresses: [{ reference: 'Condition/c-i63', display: 'Ajuinfarkt' }],
  goal: [{ reference: 'Goal/g-walk' }, { reference: 'Goal/g-home' }],
  activity: [
    { reference: { reference: 'ServiceRequest/sr-physio', display: 'Physiotherapy twice a week' } },
    { reference: { reference: 'ServiceRequest/sr-homecare' } },
    {
      detail: {
        kind: 'Appointment',
        code: { coding: [{ system: 'http://snomed.info/sct', code: '185389009', display: 'Follow-up visit' }] },
        status: 'scheduled',
        scheduledPeriod: { start: '2026-12-01T09:00:00+02:00', end: '2026-12-01T09:30:00+02:00' },
        performer: [{ reference: 'Practitioner/D12345' }],
        description: 'Follow-up with the family doctor: blood pressure, medication review.',
      },
    },
    {
      detail: {
        kind: 'Task',
        code: { text: 'Meals on wheels' },
        status: 'in-progress',
        scheduledTiming: { repeat: { frequency: 1, period: 1, periodUnit: 'd', boundsPeriod: { start: '2026-11-11' } } },
        performer: [{ reference: 'Organization/elva-vald', display: 'Elva vald, sotsiaalosakond' }],
      },
    },
  ],
  note: [{ authorReference: { reference: 'Practitioner/D12345' }, time: '2026-11-10T12:00:00+02:00', text: 'Daughter Kati is the main carer; she has a key.' }],
};

/** A typical Patient (Estonian national id, name, address, contacts, family doctor). */
export const benchPatient: Patient = {
  resourceType: 'Patient',
  id: 'p-37302102711',
  identifier: [
    { system: 'https://fhir.ee/sid/pid/est/ni', value: '37302102711' },
    { system: 'https://elva-haigla.ee/fhir/sid/mrn', value: 'H-417', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] } },
  ],
  active: true,
  name: [{ use: 'official', family: 'Õunapuu', given: ['Tõnu', 'Jüri'] }],
  telecom: [
    { system: 'phone', value: '+3725551234', use: 'home' },
    { system: 'email', value: 'tonu@example.ee' },
  ],
  gender: 'male',
  birthDate: '1973-02-10',
  address: [{ use: 'home', line: ['Kesk tn 1'], city: 'Elva', district: 'Tartumaa', postalCode: '61507', country: 'EE' }],
  contact: [{ relationship: [{ text: 'Tütar' }], name: { family: 'Õunapuu', given: ['Kati'] }, telecom: [{ system: 'phone', value: '+3725559876' }] }],
  generalPractitioner: [{ reference: 'Practitioner/D12345' }],
};

/** Prints validations/s and extractions/s per resource, and the first-use costs. */
export function benchValidate(): void {
  console.log('\nValidation and search indexing per resource (one core, warm, 2 s each)');
  line('load definitions (schema, StructureDefinitions)', { ms: prepareValidation().toFixed(0) });
  for (const t of ['CarePlan', 'Patient']) line(`first compile of the ${t} validator`, { ms: prepareValidation(t).toFixed(1) });
  let t0 = performance.now();
  searchParamsFor('Patient');
  line('load and split SearchParameters', { ms: (performance.now() - t0).toFixed(0) });
  for (const [name, r] of [
    ['CarePlan', benchCarePlan],
    ['Patient', benchPatient],
  ] as const) {
    const errors = validateResource(r).filter((i) => i.severity === 'error');
    if (errors.length) throw new Error(`bench ${name} is not valid: ${errors.map((e) => e.diagnostics).join('; ')}`);
    const label = `${name} (${JSON.stringify(r).length} bytes)`;
    const v = opsPerSecond(() => validateResource(r));
    line(`validate ${label}`, { 'validations/s': v.ops, µs: v.usPerOp });
    t0 = performance.now();
    extractSearchValues(r);
    const first = (performance.now() - t0).toFixed(1);
    const x = opsPerSecond(() => extractSearchValues(r));
    line(`index rows ${label}`, { 'extractions/s': x.ops, µs: x.usPerOp, 'first call ms': first });
  }
  // what every write of the shared plan costs: base R4 checks plus the shared-careplan profile it claims
  const shared: CarePlan = {
    ...benchCarePlan,
    meta: { ...benchCarePlan.meta, profile: ['https://care-gateway.ee/fhir/StructureDefinition/shared-careplan'] },
    category: [{ coding: [{ system: 'http://loinc.org', code: 'LA28865-6' }] }],
    activity: benchCarePlan.activity!.filter((a) => a.reference),
  };
  const issues = checkResource(shared).filter((i) => i.severity === 'error');
  if (issues.length) throw new Error(`bench shared CarePlan is not valid: ${issues.map((e) => e.diagnostics).join('; ')}`);
  const p = opsPerSecond(() => checkResource(shared));
  line(`validate shared CarePlan + profile (${JSON.stringify(shared).length} bytes)`, { 'validations/s': p.ops, µs: p.usPerOp });
}

/** Entry point when run on its own. */
export function main(): void {
  benchValidate();
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
