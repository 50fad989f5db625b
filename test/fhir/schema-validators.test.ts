/**
 * The validators the build compiles ahead of time (src/fhir/schema-validators.ts) must say exactly what compiling the
 * same schema at run time says: same verdict, same errors, for valid and broken resources of many types.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { SCHEMA_OPTIONS, fhirSchema, hasPrecompiledValidators, precompiledValidator } from '../../src/fhir/schema-validators.js';

const golden = path.resolve('test/golden/own');
const resources = fs
  .readdirSync(golden)
  .filter((f) => f.endsWith('.json'))
  .flatMap((f) => (JSON.parse(fs.readFileSync(path.join(golden, f), 'utf8')) as { bundle: { entry: { resource: Record<string, unknown> }[] } }).bundle.entry)
  .map((e) => e.resource);

/** Every resource of the golden Bundles, and a broken copy of each: a wrong type, an unknown element, a bad code. */
const broken: Record<string, unknown>[] = resources.map((r, i) => ({
  ...r,
  id: i % 2 ? 42 : 'ok-id',
  unknownElement: true,
  meta: { lastUpdated: 'yesterday', versionId: 1 },
  ...(r.resourceType === 'Patient' ? { gender: 'sometimes', name: [{ family: ['Tamm'] }] } : {}),
  ...(r.resourceType === 'Encounter' ? { status: 'done', class: 'IMP' } : {}),
}));

test('the build wrote the validators of every R4 resource type', () => {
  if (!hasPrecompiledValidators()) throw new Error('no precompiled validators for this ajv, its options and schema: `npm run build` writes them');
  for (const t of ['Patient', 'CarePlan', 'CareTeam', 'Bundle', 'Task', 'Appointment', 'Coverage']) expect(typeof precompiledValidator(t)).toBe('function');
  expect(precompiledValidator('NotAType')).toBeUndefined();
});

test('they judge and explain as the validators compiled at run time do', () => {
  const ajv = new Ajv(SCHEMA_OPTIONS);
  ajv.addSchema(fhirSchema(), 'fhir');
  const types = new Set(resources.map((r) => String(r.resourceType)));
  expect(types.size).toBeGreaterThan(10);
  let invalid = 0;
  for (const r of [...resources, ...broken]) {
    const type = String(r.resourceType);
    const built = precompiledValidator(type)!;
    const compiled = ajv.getSchema(`fhir#/definitions/${type}`) ?? ajv.compile({ $ref: `fhir#/definitions/${type}` });
    const verdict = built(r);
    expect([type, verdict]).toEqual([type, compiled(r)]);
    expect(built.errors ?? null).toEqual(compiled.errors ?? null);
    if (!verdict) invalid++;
  }
  expect(invalid).toBe(broken.length); // every broken copy was refused, every golden resource accepted
});
