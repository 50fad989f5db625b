/**
 * Turns a resource into search-index rows at write time, from the official R4 SearchParameter definitions
 * (src/fhir/searchparams.ts), and names the Patient compartment the resource belongs to (its `patient_key`).
 */
import crypto from 'node:crypto';
import type { Resource } from '../fhir/types.js';
import { extractSearchValues, searchParamsFor, type SearchValues } from '../fhir/searchparams.js';

/**
 * The longest value an index row holds, in UTF-8 bytes. A B-tree entry must fit in a third of a page (2,704 bytes
 * with PostgreSQL's 8 KB pages, PGlite included): a 3,000-character name or identifier failed the whole write
 * ("index row size exceeds btree maximum", a 500). `idx_token_lookup` holds a system and a code in one entry, so
 * each gets at most 512 bytes (with the type, parameter and entry overhead well under the limit, whatever the
 * characters); no real name, identifier, code or URL comes near it.
 */
export const INDEX_VALUE_BYTES = 512;
/** `#` and a SHA-256 in base64url (43 characters) */
const HASH_SUFFIX_BYTES = 44;

/** The longest prefix of `s` of at most `bytes` UTF-8 bytes, cut between characters. */
function utf8Prefix(s: string, bytes: number): string {
  const b = Buffer.from(s, 'utf8');
  let end = bytes;
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--; // never inside a character's continuation bytes
  return b.subarray(0, end).toString('utf8');
}

/** True when `s` is longer than an index row holds (the length test alone answers for nearly every value). */
function overCap(s: string): boolean {
  return s.length * 3 > INDEX_VALUE_BYTES && Buffer.byteLength(s, 'utf8') > INDEX_VALUE_BYTES;
}

/**
 * A normalised string value as its index row holds it, and as a search value is compared with it: the value itself,
 * or past INDEX_VALUE_BYTES its first 512 bytes. Prefix search keeps working (a query longer than that compares on
 * its own first 512 bytes, so it finds every value starting with them); `:contains` sees the first 512 bytes only.
 */
export function indexPrefix(s: string): string {
  return overCap(s) ? utf8Prefix(s, INDEX_VALUE_BYTES) : s;
}

/**
 * A value compared for equality (a token's system and code, a uri, a string as written for `:exact`) as its index
 * row holds it, and as a search value is compared with it: the value itself, or past INDEX_VALUE_BYTES its first 468
 * bytes, `#` and the SHA-256 of the whole value, so an exact match stays exact.
 */
export function indexKey(s: string): string;
export function indexKey(s: string | null | undefined): string | null | undefined;
export function indexKey(s: string | null | undefined): string | null | undefined {
  if (typeof s !== 'string' || !overCap(s)) return s;
  return `${utf8Prefix(s, INDEX_VALUE_BYTES - HASH_SUFFIX_BYTES)}#${crypto.createHash('sha256').update(s, 'utf8').digest('base64url')}`;
}

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
  // values past INDEX_VALUE_BYTES are capped (indexKey, indexPrefix); distinct values stay distinct rows
  const token = v.token.map(cappedToken);
  for (const u of v.uri) token.push({ param: u.param, system: null, code: indexKey(u.value) });
  const quantity = [...v.quantity, ...v.number.map((n) => ({ param: n.param, value: n.value, system: null, code: null }))];
  return {
    token: unique(token, (a, b) => a.code === b.code && a.system === b.system),
    string: unique(v.string, (a, b) => a.value === b.value && a.exact === b.exact).map((raw) => {
      const t = cappedString(raw);
      return t.exact === t.value ? { param: t.param, value: t.value, exact: null } : t;
    }),
    // one row per (param, target): a search anchored on a reference walks these rows and must meet each resource once
    reference: unique(v.reference, (a, b) => a.targetId === b.targetId && a.targetType === b.targetType),
    date: v.date,
    quantity,
    patientKey: patientOf(resource, v.reference),
  };
}

/** A token row with its system and code as an index row holds them (the same object when both are short). */
function cappedToken(t: SearchValues['token'][number]): SearchValues['token'][number] {
  const system = indexKey(t.system);
  const code = indexKey(t.code);
  return system === t.system && code === t.code ? t : { param: t.param, system, code };
}

/** A string row with its normalised value and written form as an index row holds them (the same object when short). */
function cappedString(t: SearchValues['string'][number]): SearchValues['string'][number] {
  const value = indexPrefix(t.value);
  const exact = indexKey(t.exact);
  return value === t.value && exact === t.exact ? t : { param: t.param, value, exact };
}

/**
 * An index row as an earlier version wrote it, uncapped, → the row `indexRows` writes now (schema migration 10).
 * A string row's written form is `exact`, or `value` where `exact` is NULL (they were equal).
 */
export function recapStringRow(value: string, exact: string | null): { value: string; exact: string | null } {
  const v = indexPrefix(value);
  const e = indexKey(exact ?? value);
  return { value: v, exact: e === v ? null : e };
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
