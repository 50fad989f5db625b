/**
 * FHIR search → one parameterised SQL query over the index tables (never a scan of JSON).
 *
 * Parameters come from the official R4 SearchParameter definitions (src/fhir/searchparams.ts), so every
 * token, reference, date, string, uri, number and quantity parameter of every type works the same way.
 * User input only ever reaches SQL as bind parameters.
 *
 * Paging is a keyset cursor on the immutable creation sequence: a page link stays valid and never skips or
 * repeats a resource while others are written.
 *
 * Longer than most files here: the SQL for each parameter type with its modifiers and prefixes, chains, _has and
 * sorting is one grammar, and a reviewer checking that no input reaches SQL except as a bind parameter reads it whole.
 *
 * @see https://hl7.org/fhir/R4/search.html
 */
import { OutcomeError, issue } from '../fhir/outcome.js';
import type { OperationOutcomeIssue, Resource } from '../fhir/types.js';
import { searchParamsFor, normalizeString } from '../fhir/searchparams.js';
import { CONFIDENTIALITY_SYSTEM } from '../fhir/identifiers.js';
import { resourceTypes } from '../fhir/definitions.js';
import { indexKey, indexPrefix } from './indexer.js';

export interface SearchRequest {
  resourceType: string;
  /** name (with any :modifier) and raw value, in request order */
  params: [string, string][];
  count?: number;
  cursor?: string;
  /** 'accurate' adds Bundle.total */
  total?: 'none' | 'accurate' | 'estimate';
  /** unknown parameters are an error (Prefer: handling=strict) instead of a warning */
  strict?: boolean;
  /**
   * The per-request access decision: every result, included ones too, passes through it; it returns the
   * resources of a page (or a round of includes) the caller may see, in order; the others are left out.
   */
  access?: (rs: Resource[]) => Promise<Resource[]>;
  /**
   * Confidentiality labels (v3-Confidentiality codes) the caller is not cleared for: resources carrying them do not
   * count as the far end of a chain or `_has`, so search criteria cannot tell who has such a resource.
   */
  hiddenLabels?: string[];
  /**
   * The caller only serialises the matches (a search Bundle, api/fhir.ts bundleJson) and makes no access decision:
   * they come back as `{ resourceType, id }` stubs carrying their stored JSON text (store/stored.ts), not parsed.
   */
  textsOnly?: boolean;
}

export interface SearchResult<T extends Resource = Resource> {
  resources: T[];
  /** resources added by _include / _revinclude */
  included: Resource[];
  nextCursor?: string;
  total?: number;
  /** warnings about ignored parameters (lenient handling) */
  issues: OperationOutcomeIssue[];
}

export interface BuiltSearch {
  sql: string;
  params: unknown[];
  limit: number;
  countSql?: string;
  countParams?: unknown[];
  issues: OperationOutcomeIssue[];
  /** how many _sort keys the page rows carry (k0, k1, …), for the next cursor */
  sortKeys: number;
  /**
   * For broad searches in creation order (see `isBroad`): the same page looked for in a window of the next
   * `probeWindow` resources of the type only. It answers when the window holds a whole page (limit + 1 matches) or
   * is the last of the type (`window_rows` < probeWindow); otherwise `sql` runs.
   */
  probeSql?: string;
  probeWindow?: number;
}

/**
 * A condition that matches a large share of a type (a status, a category, a reference to a shared Organization or
 * Practitioner) rather than one person's or one record's data. PostgreSQL misjudges how many rows such EXISTS
 * conditions keep (multi-column index rows, correlated values) and then fetches every match to sort them by seq:
 * 12,500 CareTeams for a municipality's page of 50. Walking the type in seq order and testing each row stops after
 * about a page's worth instead.
 */
function isBroad(resourceType: string, name: string, value: string): boolean {
  if (name.startsWith('_') || name.includes('.')) return false; // _id, _lastUpdated, _has, chains: selective or indexed
  const [base, modifier] = name.split(':');
  if (modifier && modifier !== 'not') return false;
  const def = searchParamsFor(resourceType)?.get(base);
  if (!def) return false;
  if (def.type === 'token') return base !== 'identifier';
  if (def.type === 'reference') {
    if (['patient', 'subject', 'beneficiary', 'encounter', 'context'].includes(base)) return false;
    return value.split(',').every((v) => /^(Organization|Practitioner|PractitionerRole|Location|HealthcareService)\//.test(v));
  }
  return def.type === 'date' || def.type === 'quantity' || def.type === 'number';
}

/**
 * A reference condition a page can be read from in creation order: one plain value naming its target's type
 * (`participant=Organization/ehak-0796`, `subject:Patient=123`). The reference index keeps the referring
 * resource's seq (schema migration 3), so the page is an ordered range of that index, stopped after `limit + 1`
 * resources that pass the other conditions — however many resources refer to the target.
 */
function anchorOf(resourceType: string, name: string, value: string): { param: string; targetType: string; targetId: string } | undefined {
  if (name.startsWith('_') || name.includes('.')) return undefined;
  const [base, modifier] = name.split(':');
  const def = searchParamsFor(resourceType)?.get(base);
  if (!def || def.type !== 'reference') return undefined;
  if (modifier !== undefined && !/^[A-Z][A-Za-z]+$/.test(modifier)) return undefined; // :missing, :identifier, :not …
  const values = splitValues(value);
  if (values.length !== 1 || !values[0]) return undefined;
  const [type, id] = parseReferenceValue(values[0]);
  const targetType = modifier ?? type ?? (def.targets.length === 1 ? def.targets[0] : undefined);
  if (!targetType || (type && modifier && type !== modifier)) return undefined;
  if (def.indexedTargetType && targetType !== def.indexedTargetType) return undefined; // matches nothing: not a walk
  return { param: def.indexedAs ?? base, targetType, targetId: id };
}

/** Result-shaping and paging parameters: handled by the API layer or here, never as filters. */
const CONTROL = new Set(['_count', '_cursor', '_total', '_format', '_pretty', '_summary', '_elements', '_sort', '_include', '_revinclude']);

export function parseSearchQuery(qs: string): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of new URLSearchParams(qs)) out.push([k, v]);
  return out;
}

/** Splits a parameter value on commas that are not escaped (`\,`), unescaping `\,` `\|` `\$` `\\`. */
export function splitValues(v: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < v.length; i++) {
    const c = v[i];
    if (c === '\\' && i + 1 < v.length) {
      cur += v[++i];
    } else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

const PREFIXES = ['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap'] as const;
type Prefix = (typeof PREFIXES)[number];

function splitPrefix(v: string): [Prefix, string] {
  const p = v.slice(0, 2) as Prefix;
  if (PREFIXES.includes(p) && /^[a-z]{2}[-+0-9]/.test(v)) return [p, v.slice(2)];
  return ['eq', v];
}

/** The instant range a (possibly partial) FHIR date/dateTime/instant value covers. */
export function dateRange(v: string, where: string): [string, string] {
  try {
    return dateRangeOf(v, where);
  } catch (err) {
    // a month 13, an hour 25, a year JavaScript dates cannot hold: the client's value, not our fault
    if (err instanceof RangeError) throw new OutcomeError('invalid', `"${v}" is not a valid date`, where);
    throw err;
  }
}

function dateRangeOf(v: string, where: string): [string, string] {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/.exec(v);
  if (!m) throw new OutcomeError('invalid', `"${v}" is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)`, where);
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  const zone = tz ?? 'Z';
  if (h !== undefined) {
    const base = `${y}-${mo}-${d}T${h}:${mi}`;
    if (s === undefined) {
      const low = new Date(`${base}:00.000${zone}`);
      return [low.toISOString(), new Date(low.getTime() + 59_999).toISOString()];
    }
    if (frac !== undefined) {
      const t = new Date(`${base}:${s}.${frac.padEnd(3, '0').slice(0, 3)}${zone}`).toISOString();
      return [t, t];
    }
    const low = new Date(`${base}:${s}.000${zone}`);
    return [low.toISOString(), new Date(low.getTime() + 999).toISOString()];
  }
  const year = Number(y);
  const month = mo ? Number(mo) : undefined;
  const day = d ? Number(d) : undefined;
  const low = new Date(Date.UTC(year, (month ?? 1) - 1, day ?? 1));
  const high =
    day !== undefined
      ? new Date(Date.UTC(year, month! - 1, day + 1) - 1)
      : month !== undefined
        ? new Date(Date.UTC(year, month, 1) - 1)
        : new Date(Date.UTC(year + 1, 0, 1) - 1);
  if (Number.isNaN(low.getTime()) || (month !== undefined && (month < 1 || month > 12))) {
    throw new OutcomeError('invalid', `"${v}" is not a valid date`, where);
  }
  return [low.toISOString(), high.toISOString()];
}

class Sql {
  params: unknown[] = [];
  p(v: unknown): string {
    return `$${this.params.push(v)}`;
  }
}

/** Date comparison of an indexed range [low, high] against a search range [a, b], per FHIR prefix semantics. */
function dateCondition(prefix: Prefix, lowCol: string, highCol: string, range: [string, string], q: Sql): string {
  const a = (): string => `${q.p(range[0])}::timestamptz`;
  const b = (): string => `${q.p(range[1])}::timestamptz`;
  switch (prefix) {
    case 'eq':
      return `(${lowCol} >= ${a()} AND ${highCol} <= ${b()})`;
    case 'ne':
      return `NOT (${lowCol} >= ${a()} AND ${highCol} <= ${b()})`;
    case 'gt':
      return `(${highCol} > ${b()})`;
    case 'lt':
      return `(${lowCol} < ${a()})`;
    case 'ge':
      return `(${highCol} >= ${a()})`;
    case 'le':
      return `(${lowCol} <= ${b()})`;
    case 'sa':
      return `(${lowCol} > ${b()})`;
    case 'eb':
      return `(${highCol} < ${a()})`;
    case 'ap':
      return `(${lowCol} <= ${b()} AND ${highCol} >= ${a()})`;
  }
}

function numberCondition(prefix: Prefix, col: string, v: string, q: Sql, where: string): string {
  if (!/^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(v)) throw new OutcomeError('invalid', `"${v}" is not a number`, where);
  const n = Number(v);
  // eq/ne/ap use the precision of the value given: 100 means [99.5, 100.5)
  const decimals = v.includes('.') ? v.split('.')[1].replace(/[eE].*$/, '').length : 0;
  const half = 0.5 * Math.pow(10, -decimals);
  switch (prefix) {
    case 'eq':
      return `(${col} >= ${q.p(n - half)}::numeric AND ${col} < ${q.p(n + half)}::numeric)`;
    case 'ne':
      return `NOT (${col} >= ${q.p(n - half)}::numeric AND ${col} < ${q.p(n + half)}::numeric)`;
    case 'ap':
      return `(${col} >= ${q.p(n - Math.abs(n) * 0.1 - half)} AND ${col} <= ${q.p(n + Math.abs(n) * 0.1 + half)})`;
    case 'gt':
    case 'sa':
      return `(${col} > ${q.p(n)})`;
    case 'lt':
    case 'eb':
      return `(${col} < ${q.p(n)})`;
    case 'ge':
      return `(${col} >= ${q.p(n)})`;
    case 'le':
      return `(${col} <= ${q.p(n)})`;
  }
}

/** A reference search value → [type or undefined, id]. Accepts `Type/id`, `id` and absolute URLs ending in Type/id. */
function parseReferenceValue(v: string): [string | undefined, string] {
  const parts = v.replace(/\/_history\/[^/]+$/, '').split('/');
  if (parts.length >= 2) return [parts[parts.length - 2], parts[parts.length - 1]];
  return [undefined, v];
}

interface SortKey {
  /** SQL expression that is never NULL (NULLs replaced so they sort last) */
  expr: string;
  desc: boolean;
  /** SQL type to cast cursor values back to */
  cast: 'timestamptz' | 'text' | 'numeric';
}

/** The cursor of a page: the sort-key values and the creation sequence of the last resource on it. */
interface Cursor {
  s: string;
  k?: string[];
}

export function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

function decodeCursor(raw: string): Cursor {
  try {
    const c = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Cursor;
    if (typeof c.s !== 'string' || !/^\d{1,19}$/.test(c.s) || (c.k !== undefined && !Array.isArray(c.k))) throw new Error('shape');
    return c;
  } catch {
    throw new OutcomeError('invalid', 'the paging cursor is not valid (follow the next link as given)', '_cursor');
  }
}

/**
 * The resource a condition is about, as SQL expressions: its type, id and seq (index rows find their resource by
 * seq, schema migration 5), and the alias of its `resource` row where there is one.
 */
interface Owner {
  type: string;
  id: string;
  seq: string;
  row?: string;
}

const ROOT: Owner = { type: 'r.resource_type', id: 'r.id', seq: 'r.seq', row: 'r' };

/** Builds one search condition: the parameter `name` (with its modifier) of `resourceType`, for the resource `o`. */
/**
 * How far a search may reach through references: a chain walks at most this many references (`a.b.c.d=` is three),
 * and the branches it fans out into (one per target type at each step) are bounded in all — a short URL must not
 * build an exponential query (`Basic?subject.subject.subject.subject._id=` fans out to 46⁴ branches).
 */
const MAX_CHAIN_DEPTH = 3;
const MAX_CHAIN_BRANCHES = 100;

class ConditionBuilder {
  private n = 0;
  private branches = 0;
  constructor(
    private readonly q: Sql,
    private readonly issues: OperationOutcomeIssue[],
    private readonly strict: boolean,
    private readonly hiddenLabels: string[] = [],
  ) {}

  /** `AND NOT (the resource carries a hidden label)`, for the far end of a chain or _has; '' when nothing is hidden. */
  notHidden(o: Owner): string {
    if (this.hiddenLabels.length === 0) return '';
    const s = this.alias();
    return ` AND NOT EXISTS (SELECT 1 FROM idx_token ${s} WHERE ${s}.resource_type = ${o.type} AND ${s}.resource_seq = ${o.seq} AND ${s}.param = '_security' AND ${s}.system = ${this.q.p(CONFIDENTIALITY_SYSTEM)} AND ${s}.code = ANY(${this.q.p(this.hiddenLabels)}::text[]))`;
  }

  private alias(): string {
    return `x${++this.n}`;
  }

  private unsupported(text: string, where: string): undefined {
    if (this.strict) throw new OutcomeError('invalid', text, where);
    this.issues.push(issue({ category: 'invalid', severity: 'warning', text: `${text}; ignored`, where }));
    return undefined;
  }

  /** SQL for `rawName=rawValue` on the resource `o`, or undefined when it is ignored. */
  build(resourceType: string, o: Owner, rawName: string, rawValue: string, where: string): string | undefined {
    const q = this.q;
    if (rawName.startsWith('_has:')) return this.reverseChain(resourceType, o, rawName, rawValue, where);
    const dot = rawName.indexOf('.');
    if (dot > 0) return this.chain(resourceType, o, rawName.slice(0, dot), rawName.slice(dot + 1), rawValue, where);
    const colon = rawName.indexOf(':');
    const name = colon < 0 ? rawName : rawName.slice(0, colon);
    const modifier = colon < 0 ? undefined : rawName.slice(colon + 1);

    if (name === '_id') {
      const ids = splitValues(rawValue);
      const cond = `${o.id} = ANY(${q.p(ids)}::text[])`;
      return modifier === 'not' ? `NOT (${cond})` : cond;
    }
    if (name === '_lastUpdated') {
      return this.orValues(rawValue, (v) => {
        const [prefix, d] = splitPrefix(v);
        const col = o.row ? `${o.row}.last_updated` : `(SELECT last_updated FROM resource lu WHERE lu.resource_type = ${o.type} AND lu.id = ${o.id})`;
        return dateCondition(prefix, col, col, dateRange(d, where), q);
      });
    }
    const def = searchParamsFor(resourceType)?.get(name);
    if (!def) return this.unsupported(`unknown search parameter "${name}" for ${resourceType}`, where);
    if (def.type === 'composite' || def.type === 'special') return this.unsupported(`search parameter "${name}" (${def.type}) is not supported`, where);
    if (modifier === 'identifier' && def.type === 'reference') {
      // matched against the identifiers of the referenced resources (as a chain on `identifier`)
      return this.chain(resourceType, o, name, 'identifier', rawValue, where);
    }
    if (modifier && !supportsModifier(def.type, modifier)) return this.unsupported(`modifier ":${modifier}" is not supported on ${def.type} parameter "${name}"`, where);

    const x = this.alias();
    // rows of a parameter identical to another are stored under that one's code (`phonetic` → `name`); a
    // type-restricted one (`patient` → `subject` rows pointing at a Patient) adds its target type
    const owner =
      `${x}.resource_type = ${o.type} AND ${x}.resource_seq = ${o.seq} AND ${x}.param = ${q.p(def.indexedAs ?? name)}` +
      (def.indexedTargetType ? ` AND ${x}.target_type = ${q.p(def.indexedTargetType)}` : '');
    const table = tableFor(def.type);
    if (modifier === 'missing') {
      const exists = `EXISTS (SELECT 1 FROM ${table} ${x} WHERE ${owner})`;
      return rawValue === 'true' ? `NOT ${exists}` : exists;
    }
    const one = (value: string): string => {
      switch (def.type) {
        case 'token':
        case 'uri': {
          const cond: string[] = [];
          // values as the index rows hold them: a long one is its prefix and hash (indexer.ts indexKey)
          if (def.type === 'uri') cond.push(`${x}.code = ${q.p(indexKey(value))}`);
          else if (value.includes('|')) {
            const bar = value.indexOf('|');
            const [system, code] = [value.slice(0, bar), value.slice(bar + 1)];
            cond.push(system === '' ? `(${x}.system IS NULL OR ${x}.system = '')` : `${x}.system = ${q.p(indexKey(system))}`);
            if (code !== '') cond.push(`${x}.code = ${q.p(indexKey(code))}`);
          } else cond.push(`${x}.code = ${q.p(indexKey(value))}`);
          return cond.join(' AND ');
        }
        case 'reference': {
          const [type, id] = parseReferenceValue(value);
          // a plain id may point at any of the parameter's target types: each is probed in the reference index
          // (type before id, as every lookup of it is ordered)
          const targetType = modifier ?? type;
          if (def.indexedTargetType && targetType && targetType !== def.indexedTargetType) return 'FALSE'; // patient=Group/1
          const types = targetType ? [targetType] : def.targets.length ? def.targets : [...resourceTypes()];
          return `${x}.target_id = ${q.p(id)} AND ` + (types.length === 1 ? `${x}.target_type = ${q.p(types[0])}` : `${x}.target_type = ANY(${q.p(types)}::text[])`);
        }
        case 'date': {
          const [prefix, v] = splitPrefix(value);
          return dateCondition(prefix, `${x}.low`, `${x}.high`, dateRange(v, where), q);
        }
        case 'string': {
          if (modifier === 'exact') {
            // the row's value as written (`exact`, NULL when it equals the normalised `value`); the normalised value
            // is compared too, so the lookup index finds the rows
            // (both as the row holds them: a long value is capped, indexer.ts indexPrefix and indexKey)
            const written = value.normalize('NFC');
            return `${x}.value = ${q.p(indexPrefix(normalizeString(written)))} AND COALESCE(${x}.exact, ${x}.value) = ${q.p(indexKey(written))}`;
          }
          const norm = normalizeString(value);
          // a row holds the first INDEX_VALUE_BYTES of a value: :contains looks there; a longer prefix compares on its own first bytes
          if (modifier === 'contains') return `${x}.value LIKE ${q.p('%' + escapeLike(norm) + '%')}`;
          return `${x}.value LIKE ${q.p(escapeLike(indexPrefix(norm)) + '%')}`;
        }
        default: {
          const [prefix, v] = splitPrefix(value);
          const [num, system, code] = v.split('|');
          const cond = [numberCondition(prefix, `${x}.value`, num, q, where)];
          if (system) cond.push(`${x}.system = ${q.p(system)}`);
          if (code) cond.push(`${x}.code = ${q.p(code)}`);
          return cond.join(' AND ');
        }
      }
    };
    const values = splitValues(rawValue);
    const combined = `EXISTS (SELECT 1 FROM ${table} ${x} WHERE ${owner} AND (${values.map(one).join(' OR ')}))`;
    return modifier === 'not' ? `NOT ${combined}` : combined;
  }

  private orValues(raw: string, f: (v: string) => string): string {
    const parts = splitValues(raw).map(f);
    return parts.length === 1 ? parts[0] : `(${parts.join(' OR ')})`;
  }

  /** `patient.identifier=…`, `participant:Organization.identifier=…`: a condition on the referenced resources. */
  private chain(resourceType: string, o: Owner, head: string, tail: string, value: string, where: string): string | undefined {
    const colon = head.indexOf(':');
    const name = colon < 0 ? head : head.slice(0, colon);
    const typeModifier = colon < 0 ? undefined : head.slice(colon + 1);
    const def = searchParamsFor(resourceType)?.get(name);
    if (!def || def.type !== 'reference') return this.unsupported(`"${name}" is not a reference parameter of ${resourceType}, so it cannot be chained`, where);
    const tailName = tail.split(/[.:]/)[0];
    const targets = (typeModifier ? [typeModifier] : def.targets).filter(
      (t) => (!def.indexedTargetType || t === def.indexedTargetType) && (tailName.startsWith('_') || searchParamsFor(t)?.has(tailName)),
    );
    if (targets.length === 0) return this.unsupported(`no target of ${resourceType}.${name} has a search parameter "${tailName}"`, where);
    if (where.split('.').length > MAX_CHAIN_DEPTH + 1) throw new OutcomeError('invalid', `a chain may walk at most ${MAX_CHAIN_DEPTH} references`, where);
    this.branches += targets.length;
    if (this.branches > MAX_CHAIN_BRANCHES) {
      throw new OutcomeError('invalid', `this chained search fans out to too many resource types; name the type of each reference (e.g. subject:Patient.name)`, where);
    }
    const x = this.alias();
    // the referenced resource's row gives its seq (a reference to nothing stored matches no condition)
    const t = this.alias();
    const target: Owner = { type: `${t}.resource_type`, id: `${t}.id`, seq: `${t}.seq`, row: t };
    const perType: string[] = [];
    for (const type of targets) {
      const inner = this.build(type, target, tail, value, where);
      if (inner) perType.push(`(${x}.target_type = ${this.q.p(type)} AND ${inner})`);
    }
    if (perType.length === 0) return undefined;
    return `EXISTS (SELECT 1 FROM idx_reference ${x} JOIN resource ${t} ON ${t}.resource_type = ${x}.target_type AND ${t}.id = ${x}.target_id WHERE ${x}.resource_type = ${o.type} AND ${x}.resource_seq = ${o.seq} AND ${x}.param = ${this.q.p(def.indexedAs ?? name)} AND (${perType.join(' OR ')})${this.notHidden(target)})`;
  }

  /** `_has:Observation:patient:code=…`: resources that some Observation with that code references through `patient`. */
  private reverseChain(resourceType: string, o: Owner, rawName: string, value: string, where: string): string | undefined {
    const m = /^_has:([A-Z][A-Za-z]+):([a-z][a-z0-9-]*):(.+)$/.exec(rawName);
    if (!m) return this.unsupported(`"${rawName}" is not of the form _has:Type:reference-parameter:parameter`, where);
    const [, type, refParam, rest] = m;
    const def = searchParamsFor(type)?.get(refParam);
    if (!def || def.type !== 'reference') return this.unsupported(`"${refParam}" is not a reference parameter of ${type}`, where);
    const x = this.alias();
    const source: Owner = { type: `${x}.resource_type`, id: `${x}.resource_id`, seq: `${x}.resource_seq` };
    const inner = this.build(type, source, rest, value, where);
    if (!inner) return undefined;
    return `EXISTS (SELECT 1 FROM idx_reference ${x} WHERE ${x}.resource_type = ${this.q.p(type)} AND ${x}.param = ${this.q.p(def.indexedAs ?? refParam)}${def.indexedTargetType ? ` AND ${x}.target_type = ${this.q.p(def.indexedTargetType)}` : ''} AND ${x}.target_type = ${o.type} AND ${x}.target_id = ${o.id} AND ${inner}${this.notHidden(source)})`;
  }
}

/** `_sort=-date,status` → sort keys over the index tables; NULLs (no value) sort last either way. */
function sortKeys(resourceType: string, raw: string | undefined, q: Sql, builder: { strict: boolean; issues: OperationOutcomeIssue[] }): SortKey[] {
  if (!raw) return [];
  const keys: SortKey[] = [];
  for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const desc = part.startsWith('-');
    const name = desc ? part.slice(1) : part;
    const agg = desc ? 'max' : 'min';
    if (name === '_lastUpdated') {
      keys.push({ expr: 'r.last_updated', desc, cast: 'timestamptz' });
      continue;
    }
    if (name === '_id') {
      keys.push({ expr: 'r.id COLLATE "C"', desc, cast: 'text' });
      continue;
    }
    const def = searchParamsFor(resourceType)?.get(name);
    const owner = `s.resource_type = r.resource_type AND s.resource_seq = r.seq AND s.param = ${def ? q.p(def.indexedAs ?? name) : "''"}`;
    switch (def?.type) {
      case 'date':
        keys.push({
          expr: `COALESCE((SELECT ${agg}(s.low) FROM idx_date s WHERE ${owner}), '${desc ? '-infinity' : 'infinity'}'::timestamptz)`,
          desc,
          cast: 'timestamptz',
        });
        break;
      case 'string':
      case 'token':
      case 'uri': {
        const col = def.type === 'string' ? 's.value' : 's.code';
        const table = def.type === 'string' ? 'idx_string' : 'idx_token';
        keys.push({
          expr: `COALESCE((SELECT ${agg}(${col} COLLATE "C") FROM ${table} s WHERE ${owner}), ${desc ? "''" : 'chr(1114111)'}) COLLATE "C"`,
          desc,
          cast: 'text',
        });
        break;
      }
      case 'number':
      case 'quantity':
        keys.push({
          expr: `COALESCE((SELECT ${agg}(s.value) FROM idx_quantity s WHERE ${owner}), '${desc ? '-Infinity' : 'Infinity'}'::numeric)`,
          desc,
          cast: 'numeric',
        });
        break;
      default: {
        const text = def ? `cannot sort by ${def.type} parameter "${name}"` : `unknown sort parameter "${name}" for ${resourceType}`;
        if (builder.strict) throw new OutcomeError('invalid', text, '_sort');
        builder.issues.push(issue({ category: 'invalid', severity: 'warning', text: `${text}; ignored`, where: '_sort' }));
      }
    }
  }
  return keys;
}

export function buildSearch(req: SearchRequest): BuiltSearch {
  const q = new Sql();
  const issues: OperationOutcomeIssue[] = [];
  const builder = new ConditionBuilder(q, issues, req.strict ?? false, req.hiddenLabels);
  const where: string[] = [`r.resource_type = ${q.p(req.resourceType)}`, `r.deleted = false`];
  let sortParam: string | undefined;
  let filters = 0;
  let broad = true;
  let anchor: ReturnType<typeof anchorOf>;
  // a page read from the reference index comes in creation order only: not for a sorted search
  const sorted = req.params.some(([k, v]) => k === '_sort' && v.trim() !== '');
  for (const [rawName, rawValue] of req.params) {
    if (rawName === '_sort') sortParam = rawValue;
    if (CONTROL.has(rawName) || rawName.startsWith('_include') || rawName.startsWith('_revinclude')) continue;
    filters++;
    broad &&= isBroad(req.resourceType, rawName, rawValue);
    if (!anchor && !sorted) {
      anchor = anchorOf(req.resourceType, rawName, rawValue);
      if (anchor) continue; // the walk below is this condition
    }
    const cond = builder.build(req.resourceType, ROOT, rawName, rawValue, rawName);
    if (cond) where.push(cond);
  }
  // resources with a label the caller is not cleared for are no match either (and are not counted)
  const hidden = builder.notHidden(ROOT);
  if (hidden) where.push(hidden.replace(/^ AND /, ''));
  const keys = sortKeys(req.resourceType, sortParam, q, { strict: req.strict ?? false, issues });
  // the anchor's own condition: the page joins its index rows (below); a count tests it like any other
  const anchored = anchor && `a.param = ${q.p(anchor.param)} AND a.target_type = ${q.p(anchor.targetType)} AND a.target_id = ${q.p(anchor.targetId)}`;
  const filterParams = [...q.params];
  const filter = where.join(' AND ');
  const limit = Math.max(0, req.count ?? 20);

  let pageFilter = filter;
  let seqAfter = ''; // the cursor's seq placeholder
  if (req.cursor) {
    const c = decodeCursor(req.cursor);
    if ((c.k?.length ?? 0) !== keys.length) throw new OutcomeError('invalid', 'the paging cursor does not belong to this search', '_cursor');
    // (k1, k2, …, seq) strictly after the cursor, each key in its own direction
    const ors: string[] = [];
    for (let i = 0; i <= keys.length; i++) {
      const eqs = keys.slice(0, i).map((k, j) => `${k.expr} = ${q.p(c.k![j])}::${k.cast}`);
      if (i === keys.length) seqAfter = q.p(c.s);
      const step = i < keys.length ? `${keys[i].expr} ${keys[i].desc ? '<' : '>'} ${q.p(c.k![i])}::${keys[i].cast}` : `r.seq > ${seqAfter}::bigint`;
      ors.push(`(${[...eqs, step].join(' AND ')})`);
    }
    pageFilter += ` AND (${ors.join(' OR ')})`;
  }
  const keyCols = keys.map((k, i) => `, (${k.expr})::text AS k${i}`).join('');
  const order = [...keys.map((k) => `${k.expr} ${k.desc ? 'DESC' : 'ASC'}`), 'r.seq ASC'].join(', ');
  // rt, rid: for the first round of includes read in the same statement (repository.search)
  let sql = `SELECT r.content, r.seq::text AS seq${keyCols}, r.resource_type AS rt, r.id AS rid FROM resource r WHERE ${pageFilter} ORDER BY ${order} LIMIT ${limit + 1}`;
  if (anchored) {
    // The page in creation order straight from the reference index: a walk along the target's index rows, one
    // `ORDER BY resource_seq LIMIT 1` step at a time (always an index descent, whatever the planner believes about
    // how many rows refer to the target — it misjudges that by 60× for a municipality), each row tested against
    // the other conditions, stopped once a page (and one more) has passed. LATERAL keeps the walk's order.
    const step = (after: string) => `SELECT a.resource_id AS id, a.resource_seq AS s FROM idx_reference a WHERE a.resource_type = $1 AND ${anchored}${after} ORDER BY a.resource_seq LIMIT 1`;
    sql =
      `WITH RECURSIVE walk(id, s) AS ((${step(seqAfter ? ` AND a.resource_seq > ${seqAfter}::bigint` : '')}) ` +
      `UNION ALL SELECT n.id, n.s FROM walk w CROSS JOIN LATERAL (${step(' AND a.resource_seq > w.s')}) n) ` +
      `SELECT m.* FROM walk w CROSS JOIN LATERAL (SELECT r.content, r.seq::text AS seq, r.resource_type AS rt, r.id AS rid FROM resource r WHERE r.id = w.id AND ${pageFilter}) m LIMIT ${limit + 1}`;
  }
  const built: BuiltSearch = { sql, params: q.params, limit, issues, sortKeys: keys.length };
  if (broad && !anchor && filters > 0 && keys.length === 0 && limit > 0) {
    const window = Math.max(500, 10 * (limit + 1));
    const after = seqAfter ? ` AND seq > ${seqAfter}::bigint` : '';
    built.probeWindow = window;
    built.probeSql =
      `WITH w AS MATERIALIZED (SELECT * FROM resource WHERE resource_type = $1 AND deleted = false${after} ORDER BY seq LIMIT ${window}) ` +
      `SELECT r.content, r.seq::text AS seq, r.resource_type AS rt, r.id AS rid, (SELECT count(*) FROM w)::int AS window_rows FROM w r WHERE ${pageFilter} ORDER BY r.seq ASC LIMIT ${limit + 1}`;
  }
  if (req.total === 'accurate' || req.total === 'estimate') {
    const anchorCond = anchored ? ` AND EXISTS (SELECT 1 FROM idx_reference a WHERE a.resource_type = r.resource_type AND a.resource_seq = r.seq AND ${anchored})` : '';
    built.countSql = `SELECT count(*)::text AS n FROM resource r WHERE ${filter}${anchorCond}`;
    built.countParams = filterParams;
  }
  return built;
}

/** The cursor for the page after the given last row of a page. */
export function cursorAfter(row: Record<string, unknown>, sortKeyCount: number): string {
  const k = Array.from({ length: sortKeyCount }, (_, i) => String(row[`k${i}`]));
  return encodeCursor(sortKeyCount ? { s: String(row.seq), k } : { s: String(row.seq) });
}

function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => '\\' + c);
}

function tableFor(type: string): string {
  switch (type) {
    case 'token':
    case 'uri':
      return 'idx_token';
    case 'reference':
      return 'idx_reference';
    case 'date':
      return 'idx_date';
    case 'string':
      return 'idx_string';
    default:
      return 'idx_quantity';
  }
}

function supportsModifier(type: string, modifier: string): boolean {
  if (modifier === 'missing') return true;
  switch (type) {
    case 'token':
      return modifier === 'not';
    case 'string':
      return modifier === 'exact' || modifier === 'contains';
    case 'reference':
      return /^[A-Z][A-Za-z]+$/.test(modifier);
    default:
      return false;
  }
}
