/** Validation cost per resource (R4 JSON schema per type + StructureDefinition rules + invariants). */
import fs from 'node:fs';
import path from 'node:path';
import type { CarePlan, Patient } from '@medplum/fhirtypes';
import { validateResource } from '../src/fhir/validate.js';
import { extractSearchValues } from '../src/fhir/searchparams.js';
import { line, opsPerSecond } from './timing.js';

export function benchValidate(): void {
  const corpus = path.resolve(process.cwd(), '../shared/corpus/fhir/r4-spec-examples');
  const carePlan: CarePlan = fs.existsSync(corpus)
    ? (JSON.parse(fs.readFileSync(path.join(corpus, 'CarePlan-example.json'), 'utf8')) as CarePlan)
    : { resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: { reference: 'Patient/1' } };
  const patient: Patient = {
    resourceType: 'Patient',
    identifier: [{ system: 'https://fhir.ee/sid/pid/est/ni', value: '37302102711' }],
    name: [{ family: 'Tamm', given: ['Jüri'] }],
    gender: 'male',
    birthDate: '1973-02-10',
    address: [{ use: 'home', line: ['Kesk 1'], city: 'Elva', postalCode: '61507', country: 'EE' }],
  };
  console.log(`\nValidation and search indexing per resource`);
  for (const [label, r] of [
    [`CarePlan (${JSON.stringify(carePlan).length} bytes)`, carePlan],
    [`Patient (${JSON.stringify(patient).length} bytes)`, patient],
  ] as const) {
    const t0 = performance.now();
    validateResource(r);
    const first = (performance.now() - t0).toFixed(0);
    const v = opsPerSecond(() => validateResource(r));
    line(`validate ${label}`, { 'validations/s': v.ops, 'µs': v.usPerOp, 'first call ms': first });
    const x = opsPerSecond(() => extractSearchValues(r));
    line(`index rows ${label}`, { 'extractions/s': x.ops, 'µs': x.usPerOp });
  }
}
