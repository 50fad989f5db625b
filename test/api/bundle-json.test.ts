/**
 * Search Bundles are written with each unchanged stored resource spliced in as its stored JSON text: the same
 * document JSON.stringify would give, whatever mix of stored, changed and new resources the Bundle holds.
 */
import type { Bundle, Patient } from '@medplum/fhirtypes';
import { bundleJson } from '../../src/api/fhir.js';
import { parseStored, storedText } from '../../src/store/stored.js';

test('stored resources are spliced as stored; copies and other entries are serialised', () => {
  const text = '{"resourceType":"Patient","id":"p1","name":[{"family":"Õunapuu","given":["Mari"]}],"birthDate":"1950-01-01"}';
  const stored = parseStored<Patient>(text);
  expect(storedText(stored)).toBe(text);
  const copy = { ...stored, name: [{ family: 'Kask' }] }; // a changed copy (as _elements or redaction make)
  expect(storedText(copy)).toBeUndefined();
  const bundle: Bundle = {
    resourceType: 'Bundle',
    type: 'searchset',
    total: 3,
    link: [{ relation: 'self', url: 'http://x/fhir/Patient?name=a"b' }],
    entry: [
      { fullUrl: 'http://x/fhir/Patient/p1', resource: stored, search: { mode: 'match' } },
      { fullUrl: 'http://x/fhir/Patient/p1', resource: copy, search: { mode: 'match' } },
      { resource: { resourceType: 'OperationOutcome', issue: [{ severity: 'warning', code: 'processing', diagnostics: 'x' }] }, search: { mode: 'outcome' } },
      { resource: stored },
    ],
  };
  const out = bundleJson(bundle);
  expect(JSON.parse(out)).toEqual(JSON.parse(JSON.stringify(bundle)));
  expect(out).toContain(`"resource":${text}`);
  expect(out.split(text).length - 1).toBe(2); // both entries of the stored object, none of the copy
  expect(bundleJson({ resourceType: 'Bundle', type: 'searchset', entry: [] })).toBe(JSON.stringify({ resourceType: 'Bundle', type: 'searchset', entry: [] }));
});
