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
import { derivation, readDefinitions, resourceTypes } from './definitions.js';

export type SearchParamType = 'token' | 'reference' | 'date' | 'string' | 'quantity' | 'number' | 'uri' | 'composite' | 'special';

export interface SearchParamDef {
  code: string;
  type: SearchParamType;
  url: string;
  /** the part of the official expression that applies to this resource type */
  expression: string;
  /** resource types a reference parameter may point at */
  targets: string[];
  /**
   * The top-level elements the expression starts from (`subject` for `CarePlan.subject.where(…)`); a resource with
   * none of them cannot have a value, and the expression is not evaluated. Undefined when it cannot be told.
   */
  heads?: string[];
  /**
   * Set when another parameter of the same type has the same type and expression (`phonetic` and `name` on
   * Patient, Practitioner and RelatedPerson): the values are indexed once, under that parameter's code, and a
   * search on this one reads those rows.
   */
  indexedAs?: string;
  /**
   * With `indexedAs`: only that parameter's rows pointing at this type are this one's values. `patient`
   * (`CarePlan.subject.where(resolve() is Patient)`) is `subject` restricted to Patient targets.
   */
  indexedTargetType?: string;
}

type Atom = ReturnType<typeof parseFhirPath>;

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

/** `CarePlan.subject.where(resolve() is Patient) | (CarePlan.period)` → ['subject', 'period'] */
function headsOf(expression: string, type: string): string[] | undefined {
  const heads: string[] = [];
  for (const part of splitUnion(expression)) {
    const m = new RegExp(`^\\(*${type}\\.([a-zA-Z]+)`).exec(part);
    if (!m) return undefined;
    heads.push(m[1]);
  }
  return heads.length ? heads : undefined;
}

/** True when the resource has an element named `head`, or a choice element `head[x]` (`valueQuantity` for `value`). */
function hasHead(r: Record<string, unknown>, heads: string[]): boolean {
  for (const h of heads) {
    if (r[h] !== undefined) return true;
    for (const k in r) if (k.length > h.length && k.startsWith(h) && k.charCodeAt(h.length) < 91 && k.charCodeAt(h.length) > 64) return true;
  }
  return false;
}

/** The parameters of each resource type, split and compiled at build (definitions.ts `derivation`). */
const index = derivation('search-parameters', import.meta.url, (): Map<string, Map<string, SearchParamDef>> => {
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
        m.set(sp.code, { code: sp.code, type: sp.type as SearchParamType, url: sp.url, expression, targets: sp.target ?? [], heads: headsOf(expression, t) });
      }
    }
  }
  // identical parameters of a type share their rows: the alphabetically first code holds them
  for (const m of idx.values()) {
    const first = new Map<string, string>();
    for (const code of [...m.keys()].sort()) {
      const def = m.get(code)!;
      if (!def.expression || def.type === 'composite' || def.type === 'special') continue;
      const key = `${def.type}|${def.expression}`;
      const holder = first.get(key);
      if (holder === undefined) first.set(key, code);
      else def.indexedAs = holder;
    }
    // `X.a.where(resolve() is T)` next to a reference parameter `X.a`: the latter's rows with target type T
    for (const def of m.values()) {
      if (def.type !== 'reference' || def.indexedAs) continue;
      const w = WHERE_IS.exec(def.expression);
      const holder = w && first.get(`reference|${w[1]}`);
      if (holder && holder !== def.code && !m.get(holder)!.indexedAs && m.get(holder)!.targets.includes(w[2])) {
        def.indexedAs = holder;
        def.indexedTargetType = w[2];
      }
    }
  }
  return idx;
});

/**
 * Every (resource type, reference parameter) whose rows may point at one of `targetTypes` (per the parameters'
 * declared targets), or every one when `targetTypes` is undefined; parameters whose rows another holds are left out.
 */
export function referenceParamsTo(targetTypes?: Iterable<string>): [string, string][] {
  const wanted = targetTypes ? new Set(targetTypes) : undefined;
  const out: [string, string][] = [];
  for (const [type, defs] of index.get()) {
    for (const def of defs.values()) {
      if (def.type !== 'reference' || def.indexedAs || !def.expression) continue;
      if (!wanted || def.targets.some((t) => wanted.has(t))) out.push([type, def.code]);
    }
  }
  return out;
}

/**
 * The official R4 search parameters of a resource type, by code (the Resource-level ones, `_id`, `_lastUpdated`, …,
 * included for every type); undefined for an unknown type. Loaded and split per type once.
 */
export function searchParamsFor(resourceType: string): Map<string, SearchParamDef> | undefined {
  return index.get().get(resourceType);
}

let typesIndexed = false;
function ensureTypeInfo(): void {
  if (typesIndexed) return;
  for (const f of ['profiles-types.json', 'profiles-resources.json']) indexStructureDefinitionBundle(readDefinitions(f));
  typesIndexed = true;
}

/**
 * One part of a parameter's expression, compiled once: a plain path (`CarePlan.activity.reference`) is followed
 * directly through the JSON (choice elements included); anything else (`where(…)`, `as`, functions) is parsed once
 * with @medplum/core and evaluated with its FHIRPath engine.
 */
type Compiled = { path: string[]; refType?: string; where?: [string, string]; atom?: Atom } | { atom: Atom };
const compiled = new Map<string, Compiled[]>();

const PLAIN = /^[A-Z][A-Za-z]*(\.[a-z][A-Za-z]*)+$/;
/** `(X.a.b as T)` with an optional plain tail, or `X.a.b.as(T)`: the choice element `bT` */
const AS_CAST = /^\(([A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+) as ([A-Za-z]+)\)((?:\.[a-z][A-Za-z]*)*)$/;
const AS_FN = /^([A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)\.as\(([A-Za-z]+)\)$/;
/** `X.a.where(resolve() is T)` and `X.a.where(system='v')` */
const WHERE_IS = /^([A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)\.where\(resolve\(\) is ([A-Z][A-Za-z]*)\)$/;
const WHERE_EQ = /^([A-Z][A-Za-z]*(?:\.[a-z][A-Za-z]*)+)\.where\(([a-z][A-Za-z]*)='([^']*)'\)$/;

/** The common FHIRPath shapes of the R4 parameters as direct walks; the engine's parse is kept to compare. */
function fastPath(part: string): { path: string[]; refType?: string; where?: [string, string] } | undefined {
  if (PLAIN.test(part)) return { path: part.split('.').slice(1) };
  let m = AS_CAST.exec(part) ?? AS_FN.exec(part);
  if (m) {
    const path = m[1].split('.').slice(1);
    path[path.length - 1] += m[2][0].toUpperCase() + m[2].slice(1);
    return { path: [...path, ...(m[3] ? m[3].split('.').slice(1) : [])] };
  }
  if ((m = WHERE_IS.exec(part))) return { path: m[1].split('.').slice(1), refType: m[2] };
  if ((m = WHERE_EQ.exec(part))) return { path: m[1].split('.').slice(1), where: [m[2], m[3]] };
  return undefined;
}

function compile(expression: string): Compiled[] {
  let c = compiled.get(expression);
  if (!c) {
    c = [];
    for (const part of splitUnion(expression)) {
      const fast = fastPath(part);
      const a = fast && PLAIN.test(part) ? undefined : atom(part);
      if (fast) c.push(a ? { ...fast, atom: a } : fast);
      else if (a) c.push({ atom: a });
    }
    compiled.set(expression, c);
  }
  return c;
}

/** Keeps the values a `where(…)` of a fast path lets through. */
function filterWhere(part: { refType?: string; where?: [string, string] }, values: TypedValue[], from: number): void {
  if (!part.refType && !part.where) return;
  let j = from;
  for (let i = from; i < values.length; i++) {
    const v = values[i].value as Record<string, unknown> | null;
    const keep = part.refType
      ? typeof v?.reference === 'string' && splitReference(v.reference)?.[0] === part.refType
      : typeof v === 'object' && v !== null && v[part.where![0]] === part.where![1];
    if (keep) values[j++] = values[i];
  }
  values.length = j;
}

/** The values at a plain path; `effective` also finds `effectiveDateTime`, `effectivePeriod`, … */
function follow(node: unknown, path: string[], i: number, out: TypedValue[]): void {
  if (node === undefined || node === null) return;
  if (Array.isArray(node)) {
    for (const n of node) follow(n, path, i, out);
    return;
  }
  if (i === path.length) {
    out.push({ type: '', value: node });
    return;
  }
  if (typeof node !== 'object') return;
  const o = node as Record<string, unknown>;
  const name = path[i];
  if (o[name] !== undefined) {
    follow(o[name], path, i + 1, out);
    return;
  }
  for (const k in o) {
    if (k.length > name.length && k.startsWith(name) && k.charCodeAt(name.length) >= 65 && k.charCodeAt(name.length) <= 90) {
      const before = out.length;
      follow(o[k], path, i + 1, out);
      if (i + 1 === path.length) for (let j = before; j < out.length; j++) out[j] = { type: k.slice(name.length), value: out[j].value };
    }
  }
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
  /** `value` normalised (case and accents folded) for the default match and :contains; `exact` as written (NFC), for :exact */
  string: { param: string; value: string; exact: string }[];
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
  // the common shapes written as they are (no Date round trip): a whole day, and a UTC instant to the second or
  // millisecond, on days every month has; anything else goes through Date below
  if (d !== undefined && y >= '1000' && mo >= '01' && mo <= '12' && d >= '01' && d <= '28') {
    if (h === undefined) return [`${y}-${mo}-${d}T00:00:00.000Z`, `${y}-${mo}-${d}T23:59:59.999Z`];
    if (tz === 'Z' && s !== undefined && h <= '23' && mi <= '59' && s <= '59' && (frac === undefined || frac.length === 4)) {
      const at = `${y}-${mo}-${d}T${h}:${mi}:${s}`;
      return frac ? [`${at}${frac}Z`, `${at}${frac}Z`] : [`${at}.000Z`, `${at}.999Z`];
    }
  }
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

/**
 * `Patient/1` or `Patient/1/_history/2` → [type, id]. Contained (`#x`), `urn:uuid:` and absolute URLs (resources on
 * other servers) → undefined: they are not rows of this server's reference index.
 */
export function splitReference(ref: string): [string, string] | undefined {
  // by position rather than a regex replace and split: every reference of every version written passes here
  const slash = ref.indexOf('/');
  if (slash <= 0) return undefined;
  let end = ref.indexOf('/', slash + 1);
  if (end < 0) end = ref.length;
  else if (!ref.startsWith('/_history/', end) || end + 10 === ref.length || ref.indexOf('/', end + 10) >= 0) return undefined;
  const type = ref.slice(0, slash);
  const id = ref.slice(slash + 1, end);
  return resourceTypes().has(type) && ID.test(id) ? [type, id] : undefined;
}
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

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
      // normalised for the default match and :contains, and as written for :exact (case- and accent-sensitive)
      const push = (text: string): void => {
        out.string.push({ param, value: normalizeString(text), exact: text.normalize('NFC') });
      };
      if (typeof v === 'string') {
        push(v);
        return;
      }
      const o = v as Obj;
      const parts: unknown[] = [o.text, o.family, o.given, o.prefix, o.suffix, o.line, o.city, o.district, o.state, o.postalCode, o.country];
      for (const p of parts.flat()) if (typeof p === 'string' && p) push(p);
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

/**
 * Every search value of a resource, per the official parameters of its type, as index rows: tokens (Identifier,
 * Coding, CodeableConcept, code, boolean, ContactPoint), references (`Type/id` on this server), date ranges
 * (partial dates expand to their whole range; no offset means UTC; an open Period end is `infinity`), normalised
 * strings (each part of a HumanName or Address on its own), quantities, numbers and URIs. `_id`, `_lastUpdated`
 * and composite/special parameters are not extracted (the store has columns for the first two).
 * `fhirPathOnly` evaluates plain paths with the FHIRPath engine too (slower; the tests compare both); `only`
 * restricts extraction to the named parameters.
 */
export function extractSearchValues(resource: Resource, options: { fhirPathOnly?: boolean; only?: ReadonlySet<string> } = {}): SearchValues {
  const out: SearchValues = { token: [], string: [], reference: [], date: [], quantity: [], number: [], uri: [] };
  const defs = searchParamsFor(resource.resourceType);
  if (!defs) return out;
  let typed: TypedValue[] | undefined;
  // the FHIRPath engine needs the type definitions (~0.5 s to index); most values are read by direct walks, so a
  // process indexes them when an expression first needs the engine
  const inputOf = (): TypedValue[] => {
    ensureTypeInfo();
    return (typed ??= [toTypedValue(resource)]);
  };
  for (const def of defs.values()) {
    if (!def.expression || def.indexedAs || def.type === 'composite' || def.type === 'special' || def.code === '_id' || def.code === '_lastUpdated') continue;
    if (options.only && !options.only.has(def.code)) continue;
    if (def.heads && !hasHead(resource as unknown as Record<string, unknown>, def.heads)) continue;
    const values: TypedValue[] = [];
    for (const part of compile(def.expression)) {
      if ('path' in part && !options.fhirPathOnly) {
        const from = values.length;
        follow(resource, part.path, 0, values);
        filterWhere(part, values, from);
      } else if ('path' in part && !part.atom) values.push(...evalFhirPathTyped(atom(`${resource.resourceType}.${part.path.join('.')}`)!, inputOf()));
      else {
        try {
          values.push(...evalFhirPathTyped(part.atom!, inputOf()));
        } catch {
          // an expression that cannot be evaluated on this resource leaves its parameter unindexed
        }
      }
    }
    for (const tv of values) addValue(out, def, tv);
  }
  return out;
}
