/**
 * The slim copies of the big R4 definition files (written by `npm run build`) drop documentation only: every
 * element keeps what validation, FHIRPath and search read (path, cardinality, types, bindings, invariants, flags).
 * What the build derives from them (the validation model, the search index, …) is what a process would derive.
 */
import fs from 'node:fs';
import v8 from 'node:v8';
import type { ElementDefinition, StructureDefinition } from '@medplum/fhirtypes';
import { allDerivations, derivation, readDefinitions, withoutDocumentation } from '../../src/fhir/definitions.js';
import '../../src/fhir/validate.js';
import '../../src/fhir/searchparams.js';
import '../../src/api/shape.js';

type SdBundle = { entry: { resource: StructureDefinition }[] };

test('documentation and narratives go, structure stays', () => {
  const sd = {
    resourceType: 'StructureDefinition',
    text: { status: 'generated', div: '<div>…</div>' },
    description: 'long prose',
    differential: { element: [{ path: 'X' }] },
    snapshot: {
      element: [
        {
          path: 'X.code',
          definition: 'prose',
          comment: 'prose',
          requirements: 'prose',
          mapping: [{ identity: 'v2', map: 'PID-3' }],
          min: 1,
          max: '1',
          type: [{ code: 'CodeableConcept' }],
          binding: { strength: 'required', valueSet: 'http://x', description: 'prose' },
          constraint: [{ key: 'x-1', severity: 'error', human: 'must', expression: 'a.exists()', xpath: 'f:a' }],
          isSummary: true,
          patternCodeableConcept: { text: 'a coded value, not a narrative' },
        },
      ],
    },
  };
  expect(withoutDocumentation(sd)).toEqual({
    resourceType: 'StructureDefinition',
    snapshot: {
      element: [
        {
          path: 'X.code',
          min: 1,
          max: '1',
          type: [{ code: 'CodeableConcept' }],
          binding: { strength: 'required', valueSet: 'http://x' },
          constraint: [{ key: 'x-1', severity: 'error', human: 'must', expression: 'a.exists()' }],
          isSummary: true,
          patternCodeableConcept: { text: 'a coded value, not a narrative' },
        },
      ],
    },
  });
});

test('every R4 resource element keeps its structure in the slim copy', () => {
  const full = readDefinitions<SdBundle>('profiles-resources.json', { full: true });
  const slim = withoutDocumentation(full) as SdBundle;
  const structural = (e: ElementDefinition) => ({ path: e.path, min: e.min, max: e.max, type: e.type, contentReference: e.contentReference, isSummary: e.isSummary, strength: e.binding?.strength, valueSet: e.binding?.valueSet, constraint: e.constraint?.map((c) => [c.key, c.severity, c.expression]) });
  expect(slim.entry.length).toBe(full.entry.length);
  full.entry.forEach((e, i) => {
    const a = e.resource.snapshot?.element.map((x) => structural(x as ElementDefinition));
    const b = slim.entry[i].resource.snapshot?.element.map((x) => structural(x as ElementDefinition));
    expect(b).toEqual(a);
  });
  expect(JSON.stringify(slim).length).toBeLessThan(JSON.stringify(full).length / 4);
});

test('what the build derived is what the definitions give now, byte for byte', () => {
  // (the test run builds first when a source is newer than the build: test/helpers/global-setup.ts)
  const names = allDerivations().map((d) => d.name);
  expect(names).toEqual(expect.arrayContaining(['resource-types', 'validation-model', 'search-parameters', 'summary-elements']));
  for (const d of allDerivations()) {
    expect([d.name, fs.existsSync(d.file())]).toEqual([d.name, true]);
    expect([d.name, v8.serialize(d.derive()).equals(fs.readFileSync(d.file()))]).toEqual([d.name, true]);
  }
});

test('a derivation with no file, or a damaged one, is derived in the process', () => {
  const value = () => new Map([['Patient', new Set(['name', 'birthDate'])]]);
  const missing = derivation(`test-missing-${process.pid}`, import.meta.url, value);
  expect(fs.existsSync(missing.file())).toBe(false);
  expect(missing.get()).toEqual(value());
  const damaged = derivation(`test-damaged-${process.pid}`, import.meta.url, value);
  fs.writeFileSync(damaged.file(), 'not what v8.serialize writes');
  try {
    expect(damaged.get()).toEqual(value());
  } finally {
    fs.rmSync(damaged.file(), { force: true });
  }
});
