/**
 * Stored JSON as text and as values: whether two versions differ, canonical JSON, and PostgreSQL array literals
 * (built here because the driver's own conversion is slow for the thousands of elements a batch sends).
 */
import type { Resource } from '../fhir/types.js';

/**
 * Whether two versions have the same content apart from meta.versionId/lastUpdated ("did anything change"):
 * the canonical JSON of both would be equal — key order and undefined members do not count — without building it.
 */
export function sameContent(a: Resource, b: Resource): boolean {
  const { meta: ma, ...ra } = a;
  const { meta: mb, ...rb } = b;
  return jsonEqual(ra, rb) && jsonEqual(stableMeta(ma), stableMeta(mb));
}

function stableMeta(meta: Resource['meta']): Record<string, unknown> {
  if (!meta) return {};
  const { versionId: _v, lastUpdated: _l, ...rest } = meta;
  return rest;
}

/** Deep equality of JSON values: object member order and members whose value is undefined do not count. */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
    return typeof a === 'number' && typeof b === 'number' ? JSON.stringify(a) === JSON.stringify(b) : false;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false;
    return true;
  }
  const oa = a as Record<string, unknown>;
  const ob = b as Record<string, unknown>;
  let na = 0;
  for (const k in oa) {
    if (oa[k] === undefined) continue;
    na++;
    if (!jsonEqual(oa[k], ob[k])) return false;
  }
  let nb = 0;
  for (const k in ob) if (ob[k] !== undefined) nb++;
  return na === nb;
}

export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  if (v && typeof v === 'object') {
    return '{' + Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort().map((k) => JSON.stringify(k) + ':' + canonicalJson((v as Record<string, unknown>)[k])).join(',') + '}';
  }
  return JSON.stringify(v);
}

/**
 * A PostgreSQL array literal (`{"a",NULL,"b"}`) of strings and numbers, every string quoted. Built here because
 * the driver's own conversion escapes each element with two regular-expression replacements, and a batch sends
 * thousands of elements (index rows).
 */
export function arrayLiteral(values: unknown[]): string {
  // Usually JSON's own array text is already a valid literal: PostgreSQL reads `"…"`, `\"`, `\\` and an unquoted
  // `null` the same way. Not when JSON had to write another escape (a control character: `\n`, `\u0001`), which
  // PostgreSQL would read as a plain letter, or a number JSON cannot write (NaN): then element by element.
  let plain = true;
  for (let i = 0; i < values.length && plain; i++) {
    const v = values[i];
    if (typeof v === 'number' ? !Number.isFinite(v) : v !== null && v !== undefined && typeof v !== 'string') plain = false;
  }
  if (plain) {
    const json = JSON.stringify(values);
    if (!JSON_OTHER_ESCAPE.test(json)) return `{${json.slice(1, -1)}}`;
  }
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const v = values[i];
    if (v === null || v === undefined) out += 'NULL';
    else if (typeof v === 'number') out += String(v);
    else {
      const text = String(v);
      out += NEEDS_ESCAPE.test(text) ? `"${text.replace(ESCAPED, '\\$&')}"` : `"${text}"`;
    }
  }
  return out + '}';
}
/** an escape other than \" and \\ in JSON text (a false alarm, e.g. an escaped backslash before an n, only costs time) */
const JSON_OTHER_ESCAPE = /\\[bfnrtu]/;
const NEEDS_ESCAPE = /[\\"]/;
const ESCAPED = /[\\"]/g;

