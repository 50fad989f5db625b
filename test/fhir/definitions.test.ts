/**
 * The slim copies of the big R4 definition files (written by `npm run build`) drop documentation only: every
 * element keeps what validation, FHIRPath and search read (path, cardinality, types, bindings, invariants, flags).
 */
import type { ElementDefinition, StructureDefinition } from '@medplum/fhirtypes';
import { readDefinitions, withoutDocumentation } from '../../src/fhir/definitions.js';

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
