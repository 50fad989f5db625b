/**
 * The official FHIR R4 SearchParameter definitions, indexed per resource type, and the extraction of a
 * resource's search values at write time (the rows of the index tables).
 *
 * Multi-type expressions (`AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | …`) are
 * split per type; each part is parsed once with @medplum/core's FHIRPath parser and evaluated with type
 * information from the R4 StructureDefinitions.
 *
 * @see https://hl7.org/fhir/R4/searchparameter-registry.html
 * @see https://hl7.org/fhir/R4/search.html#ptypes (how each type matches)
 */
import { evalFhirPathTyped, indexStructureDefinitionBundle, parseFhirPath, toTypedValue, type TypedValue } from '@medplum/core';
import type { SearchParameter } from '@medplum/fhirtypes';
import type { Resource } from './types.js';
import { readDefinitions, resourceTypes } from './definitions.js';

export type SearchParamType = 'token' | 'reference' | 'date' | 'string' | 'quantity' | 'number' | 'uri' | 'composite' | 'special';

export interface SearchParamDef {
  code: string;
  type: SearchParamType;
  url: string;
  /** the part of the official expression that applies to this resource type */
  expression: string;
  /** resource types a reference parameter may point at */
  targets: string[];
}

type Atom = ReturnType<typeof parseFhirPath>;

let index: Map<string, Map<string, SearchParamDef>> | undefined;
const atoms = new Map<string, Atom | null>();

/** Splits a FHIRPath union at the top level (not inside parentheses). */
function splitUnion(expr: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (let i = 0; i < expr.length; i++) {
    const c = expr[i];
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === '|' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += c;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function forType(parts: string[], type: string): string {
  return parts.filter((p) => p.replace(/^\(+/, '').startsWith(`${type}.`) || p.replace(/^\(+/, '') === type).join(' | ');
}

function buildIndex(): Map<string, Map<string, SearchParamDef>> {
  const types = resourceTypes();
  const bundle = readDefinitions<{ entry: { resource: SearchParameter }[] }>('search-parameters.json');
  const idx = new Map<string, Map<string, SearchParamDef>>();
  for (const t of types) idx.set(t, new Map());
  for (const { resource: sp } of bundle.entry) {
    if (sp.resourceType !== 'SearchParameter' || !sp.code || !sp.base) continue;
    const parts = splitUnion(sp.expression ?? '');
    for (const base of sp.base as string[]) {
      const applies = base === 'Resource' || base === 'DomainResource' ? [...types] : [base];
      for (const t of applies) {
        const m = idx.get(t);
        if (!m) continue;
        const expression = base === 'Resource' || base === 'DomainResource' ? forType(parts, base).replaceAll(`${base}.`, `${t}.`) : forType(parts, t);
        m.set(sp.code, { code: sp.code, type: sp.type as SearchParamType, url: sp.url, expression, targets: sp.target ?? [] });
      }
    }
  }
  return idx;
}

/** The search parameters of a resource type, by code; undefined for an unknown type. */
export function searchParamsFor(resourceType: string): Map<string, SearchParamDef> | undefined {
  index ??= buildIndex();
  return index.get(resourceType);
}

let typesIndexed = false;
function ensureTypeInfo(): void {
  if (typesIndexed) return;
  for (const f of ['profiles-types.json', 'profiles-resources.json']) indexStructureDefinitionBundle(readDefinitions(f));
  typesIndexed = true;
}

function atom(expr: string): Atom | null {
  let a = atoms.get(expr);
  if (a === undefined) {
    try {
      a = parseFhirPath(expr);
    } catch {
      a = null; // an expression our evaluator cannot parse: the parameter is not indexed
    }
    atoms.set(expr, a);
  }
  return a;
}

/** Lower case, accents removed: "Õunapuu" and "ounapuu" match (FHIR string search is accent- and case-insensitive). */
export function normalizeString(s: string): string {
  return s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase().trim();
}

export interface SearchValues {
  token: { param: string; system?: string | null; code?: string | null }[];
  string: { param: string; value: string }[];
  reference: { param: string; targetType: string; targetId: string }[];
  date: { param: string; low: string; high: string }[];
  quantity: { param: string; value: number; system?: string | null; code?: string | null }[];
  number: { param: string; value: number }[];
  uri: { param: string; value: string }[];
}

const DATE_RE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** The instant range a FHIR date, dateTime or instant covers ([low, high], ISO strings); undefined if unparseable. */
export function instantRange(v: string): [string, string] | undefined {
  const m = DATE_RE.exec(v);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const zone = tz ?? 'Z';
  if (h !== undefined) {
    const base = `${y}-${mo}-${d}T${h}:${mi}:${s ?? '00'}${frac ?? ''}${zone}`;
    const t = Date.parse(base);
    if (Number.isNaN(t)) return undefined;
    const width = s === undefined ? 59_999 : frac ? 0 : 999;
    return [new Date(t).toISOString(), new Date(t + width).toISOString()];
  }
  const year = Number(y);
  const month = mo ? Number(mo) : undefined;
  const day = d ? Number(d) : undefined;
  const low = Date.UTC(year, (month ?? 1) - 1, day ?? 1);
  const high = day !== undefined ? Date.UTC(year, month! - 1, day + 1) - 1 : month !== undefined ? Date.UTC(year, month, 1) - 1 : Date.UTC(year + 1, 0, 1) - 1;
  if (Number.isNaN(low)) return undefined;
  return [new Date(low).toISOString(), new Date(high).toISOString()];
}

/** `Patient/1`, `Patient/1/_history/2` or an absolute URL ending in Type/id → [type, id]; others (contained, urn:) → undefined. */
export function splitReference(ref: string): [string, string] | undefined {
  if (ref.startsWith('#') || ref.startsWith('urn:')) return undefined;
  const parts = ref.replace(/\/_history\/[^/]+$/, '').split('/');
  if (parts.length < 2) return undefined;
  const [type, id] = parts.slice(-2);
  return resourceTypes().has(type) && /^[A-Za-z0-9\-.]{1,64}$/.test(id) ? [type, id] : undefined;
}

type Obj = Record<string, unknown>;

function addValue(out: SearchValues, def: SearchParamDef, tv: TypedValue): void {
  const v = tv.value as unknown;
  if (v === undefined || v === null) return;
  const param = def.code;
  switch (def.type) {
    case 'token': {
      if (typeof v === 'string' || typeof v === 'boolean' || typeof v === 'number') {
        out.token.push({ param, system: null, code: String(v) });
        return;
      }
      const o = v as Obj;
      if (Array.isArray(o.coding)) for (const c of o.coding as Obj[]) out.token.push({ param, system: (c.system as string) ?? null, code: (c.code as string) ?? null });
      else if (tv.type === 'Identifier' || ('value' in o && !('code' in o))) out.token.push({ param, system: (o.system as string) ?? null, code: o.value === undefined ? null : String(o.value) });
      else if ('code' in o) out.token.push({ param, system: (o.system as string) ?? null, code: String(o.code) });
      return;
    }
    case 'reference': {
      const ref = typeof v === 'string' ? v : ((v as Obj).reference as string | undefined);
      const split = ref ? splitReference(ref) : undefined;
      if (split) out.reference.push({ param, targetType: split[0], targetId: split[1] });
      return;
    }
    case 'date': {
      if (typeof v === 'string') {
        const r = instantRange(v);
        if (r) out.date.push({ param, low: r[0], high: r[1] });
        return;
      }
      const o = v as Obj;
      if ('start' in o || 'end' in o) {
        const low = typeof o.start === 'string' ? instantRange(o.start)?.[0] : undefined;
        const high = typeof o.end === 'string' ? instantRange(o.end)?.[1] : undefined;
        out.date.push({ param, low: low ?? '-infinity', high: high ?? 'infinity' });
        return;
      }
      if (Array.isArray(o.event)) for (const e of o.event) addValue(out, def, { type: 'dateTime', value: e });
      const bounds = (o.repeat as Obj | undefined)?.boundsPeriod;
      if (bounds) addValue(out, def, { type: 'Period', value: bounds });
      return;
    }
    case 'string': {
      if (typeof v === 'string') {
        out.string.push({ param, value: normalizeString(v) });
        return;
      }
      const o = v as Obj;
      const parts: unknown[] = [o.text, o.family, o.given, o.prefix, o.suffix, o.line, o.city, o.district, o.state, o.postalCode, o.country];
      for (const p of parts.flat()) if (typeof p === 'string' && p) out.string.push({ param, value: normalizeString(p) });
      return;
    }
    case 'quantity':
    case 'number': {
      if (typeof v === 'number') {
        if (def.type === 'number') out.number.push({ param, value: v });
        else out.quantity.push({ param, value: v, system: null, code: null });
        return;
      }
      const o = v as Obj;
      if (typeof o.value === 'number') {
        if (def.type === 'number') out.number.push({ param, value: o.value });
        else out.quantity.push({ param, value: o.value, system: (o.system as string) ?? null, code: ((o.code ?? o.unit ?? o.currency) as string) ?? null });
      }
      return;
    }
    case 'uri':
      if (typeof v === 'string') out.uri.push({ param, value: v });
      return;
    default:
  }
}

/** Every search value of a resource, per the official parameters of its type. */
export function extractSearchValues(resource: Resource): SearchValues {
  ensureTypeInfo();
  const out: SearchValues = { token: [], string: [], reference: [], date: [], quantity: [], number: [], uri: [] };
  const defs = searchParamsFor(resource.resourceType);
  if (!defs) return out;
  const input = [toTypedValue(resource)];
  for (const def of defs.values()) {
    if (!def.expression || def.type === 'composite' || def.type === 'special' || def.code === '_id' || def.code === '_lastUpdated') continue;
    const a = atom(def.expression);
    if (!a) continue;
    let values: TypedValue[];
    try {
      values = evalFhirPathTyped(a, input);
    } catch {
      continue; // an expression that cannot be evaluated on this resource leaves its parameter unindexed
    }
    for (const tv of values) addValue(out, def, tv);
  }
  return out;
}
