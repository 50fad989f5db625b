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

/**
 * A value as text that keeps what matters to it: Maps and Sets with their order, and shared or circular objects as
 * references to their first place. (Not v8.serialize's bytes: those hold each string as V8 happens to store it,
 * Latin-1 or UTF-16, which depends on what the process met before.)
 */
function canonical(v: unknown): string {
  const seen = new Map<object, number>();
  const walk = (x: unknown): unknown => {
    if (x === null || typeof x !== 'object') return x;
    if (seen.has(x)) return { $ref: seen.get(x) };
    seen.set(x, seen.size);
    const kind = Object.prototype.toString.call(x);
    if (Array.isArray(x)) return x.map(walk);
    if (kind === '[object Map]') return { $map: [...(x as Map<unknown, unknown>)].map(([k, y]) => [walk(k), walk(y)]) };
    if (kind === '[object Set]') return { $set: [...(x as Set<unknown>)].map(walk) };
    return Object.fromEntries(Object.entries(x).map(([k, y]) => [k, y === undefined ? '$undefined' : walk(y)]));
  };
  return JSON.stringify(walk(v));
}

test('what the build derived is what the definitions give now', () => {
  // (the test run builds first when a source is newer than the build: test/helpers/global-setup.ts)
  const names = allDerivations().map((d) => d.name);
  expect(names).toEqual(expect.arrayContaining(['resource-types', 'validation-model', 'search-parameters', 'summary-elements']));
  for (const d of allDerivations()) {
    expect([d.name, fs.existsSync(d.file())]).toEqual([d.name, true]);
    const [built, now] = [canonical(v8.deserialize(fs.readFileSync(d.file()))), canonical(d.derive())];
    expect([d.name, built.length > 100, built === now]).toEqual([d.name, true, true]);
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
