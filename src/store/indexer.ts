/**
 * Turns a resource into search-index rows at write time, from the official R4 SearchParameter definitions
 * (src/fhir/searchparams.ts), and names the Patient compartment the resource belongs to (its `patient_key`).
 */
import type { Resource } from '../fhir/types.js';
import { extractSearchValues, searchParamsFor, type SearchValues } from '../fhir/searchparams.js';

/**
 * The rows of the five index tables: uri values are stored as tokens, numbers as quantities without a unit, and a
 * string's written form only where it differs from the normalised value (`exact` NULL otherwise, schema migration 4).
 */
export type IndexRows = Omit<SearchValues, 'uri' | 'number' | 'string'> & {
  string: { param: string; value: string; exact: string | null }[];
  patientKey: string | null;
};

/** Search parameters whose Patient target makes a resource part of that Patient's compartment. */
const PATIENT_PARAMS = ['patient', 'subject', 'beneficiary', 'for'];

/**
 * Per resource type, the rows those parameters' values are in, in that order: `patient` of a Provenance is held by
 * `target` rows (searchparams.ts `indexedAs`).
 */
const patientRowParams = new Map<string, { list: string[]; set: ReadonlySet<string> }>();
function rowParamsFor(resourceType: string): { list: string[]; set: ReadonlySet<string> } {
  let r = patientRowParams.get(resourceType);
  if (!r) {
    const defs = searchParamsFor(resourceType);
    const list = [...new Set(PATIENT_PARAMS.map((p) => defs?.get(p)).flatMap((d) => (d ? [d.indexedAs ?? d.code] : [])))];
    r = { list, set: new Set(list) };
    patientRowParams.set(resourceType, r);
  }
  return r;
}

function patientOf(resource: Resource, reference: SearchValues['reference']): string | null {
  if (resource.resourceType === 'Patient') return resource.id ?? null;
  for (const p of rowParamsFor(resource.resourceType).list) {
    const ref = reference.find((r) => r.param === p && r.targetType === 'Patient');
    if (ref) return ref.targetId;
  }
  return null;
}

export function indexRows(resource: Resource): IndexRows {
  const v = extractSearchValues(resource);
  const token = [...v.token, ...v.uri.map((u) => ({ param: u.param, system: null, code: u.value }))];
  const quantity = [...v.quantity, ...v.number.map((n) => ({ param: n.param, value: n.value, system: null, code: null }))];
  return {
    token: unique(token, (a, b) => a.code === b.code && a.system === b.system),
    string: unique(v.string, (a, b) => a.value === b.value && a.exact === b.exact).map((t) => (t.exact === t.value ? { param: t.param, value: t.value, exact: null } : t)),
    // one row per (param, target): a search anchored on a reference walks these rows and must meet each resource once
    reference: unique(v.reference, (a, b) => a.targetId === b.targetId && a.targetType === b.targetType),
    date: v.date,
    quantity,
    patientKey: patientOf(resource, v.reference),
  };
}

/** The rows stored for a deleted (or absent) version: none; the key is the one of the version replacing it. */
export function noIndexRows(patientKey: string | null): IndexRows {
  return { token: [], string: [], reference: [], date: [], quantity: [], patientKey };
}

/**
 * Identical rows of one resource add nothing to a search: the first of each is kept. Extraction writes a
 * parameter's rows one after another, so only rows within a run of the same parameter are compared (no keys built).
 */
function unique<T extends { param: string }>(rows: T[], same: (a: T, b: T) => boolean): T[] {
  if (rows.length < 2) return rows;
  let out: T[] | undefined;
  let run = 0;
  for (let i = 1; i < rows.length; i++) {
    const r = rows[i];
    if (rows[i - 1].param !== r.param) run = i;
    let dup = false;
    for (let j = run; j < i && !dup; j++) dup = same(rows[j], r);
    if (dup) out ??= rows.slice(0, i);
    else out?.push(r);
  }
  return out ?? rows;
}

/** The Patient compartment of a resource alone (what a stored version needs), without the whole index. */
export function patientKeyOf(resource: Resource): string | null {
  return patientOf(resource, resource.resourceType === 'Patient' ? [] : extractSearchValues(resource, { only: rowParamsFor(resource.resourceType).set }).reference);
}
