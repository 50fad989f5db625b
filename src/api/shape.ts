/**
 * `_summary` and `_elements`: return only part of each resource, marked SUBSETTED as the spec asks.
 * Summary elements come from the R4 StructureDefinitions (`isSummary`), read once.
 *
 * @see https://hl7.org/fhir/R4/search.html#summary, #elements
 */
import type { StructureDefinition } from '@medplum/fhirtypes';
import type { Resource } from '../fhir/types.js';
import { OutcomeError } from '../fhir/outcome.js';
import { derivation, readDefinitions } from '../fhir/definitions.js';

const SUBSETTED = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED', display: 'subsetted' };
const ALWAYS = ['resourceType', 'id', 'meta'];

/** Top-level element names flagged isSummary, by resource type (choice types by their [x] stem), derived at build. */
const summaries = derivation('summary-elements', import.meta.url, () => {
  const index = new Map<string, Set<string>>();
  const bundle = readDefinitions<{ entry: { resource: StructureDefinition }[] }>('profiles-resources.json');
  for (const { resource: sd } of bundle.entry) {
    if (sd.resourceType !== 'StructureDefinition' || sd.kind !== 'resource' || !sd.type) continue;
    const names = new Set<string>();
    for (const el of sd.snapshot?.element ?? []) {
      const parts = el.path.split('.');
      if (parts.length === 2 && el.isSummary) names.add(parts[1].replace('[x]', ''));
    }
    index.set(sd.type, names);
  }
  return index;
});

export function summaryElements(type: string): Set<string> {
  return summaries.get().get(type) ?? new Set();
}

function keep(r: Resource, allowed: (key: string) => boolean): Resource {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) if (ALWAYS.includes(k) || allowed(k)) out[k] = v;
  const meta = (out.meta as Resource['meta']) ?? {};
  out.meta = { ...meta, tag: [...(meta.tag ?? []), SUBSETTED] };
  return out as unknown as Resource;
}

/** Whether the request's _summary / _elements change the returned resources at all. */
export function reshapes(query: URLSearchParams): boolean {
  const summary = query.get('_summary');
  return !!query.get('_elements') || (!!summary && summary !== 'false');
}

/** A function that shapes each returned resource per the request's _summary / _elements. */
export function shaper(query: URLSearchParams): (r: Resource) => Resource {
  const summary = query.get('_summary');
  const elements = query.get('_elements');
  if (summary && !['true', 'false', 'text', 'data', 'count'].includes(summary)) {
    throw new OutcomeError('invalid', '_summary must be true, false, text, data or count', '_summary');
  }
  if (elements) {
    const names = new Set(elements.split(',').map((s) => s.trim()).filter(Boolean));
    return (r) => keep(r, (k) => names.has(k) || [...names].some((n) => k.startsWith(n) && /^[A-Z]/.test(k.slice(n.length))));
  }
  switch (summary) {
    case 'true':
      return (r) => {
        const names = summaryElements(r.resourceType);
        return keep(r, (k) => names.has(k) || [...names].some((n) => k.startsWith(n) && /^[A-Z]/.test(k.slice(n.length))));
      };
    case 'text':
      return (r) => keep(r, (k) => k === 'text');
    case 'data':
      return (r) => keep(r, (k) => k !== 'text');
    default:
      return (r) => r;
  }
}
