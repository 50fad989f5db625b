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
 * @see https://hl7.org/fhir/R4/search.html
 */
import { OutcomeError, issue } from '../fhir/outcome.js';
import type { OperationOutcomeIssue, Resource } from '../fhir/types.js';
import { searchParamsFor, normalizeString } from '../fhir/searchparams.js';

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
}

export interface SearchResult<T extends Resource = Resource> {
  resources: T[];
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

export function buildSearch(req: SearchRequest): BuiltSearch {
  const defs = searchParamsFor(req.resourceType);
  const q = new Sql();
  const issues: OperationOutcomeIssue[] = [];
  const where: string[] = [`r.resource_type = ${q.p(req.resourceType)}`, `r.deleted = false`];
  const owner = `x.resource_type = r.resource_type AND x.resource_id = r.id`;

  for (const [rawName, rawValue] of req.params) {
    if (CONTROL.has(rawName)) continue;
    const [name, modifier] = rawName.split(':', 2) as [string, string | undefined];
    const where1 = rawName;

    if (name === '_id') {
      where.push(`r.id = ANY(${q.p(splitValues(rawValue))})`);
      continue;
    }
    if (name === '_lastUpdated') {
      const [prefix, v] = splitPrefix(rawValue);
      where.push(dateCondition(prefix, 'r.last_updated', 'r.last_updated', dateRange(v, where1), q));
      continue;
    }
    const def = defs?.get(name);
    if (!def || def.type === 'composite' || def.type === 'special' || (modifier && !supportsModifier(def.type, modifier))) {
      const text = !def
        ? `unknown search parameter "${name}" for ${req.resourceType}`
        : modifier
          ? `modifier ":${modifier}" is not supported on ${def.type} parameter "${name}"`
          : `search parameter "${name}" (${def.type}) is not supported`;
      if (req.strict) throw new OutcomeError('invalid', text, where1);
      issues.push(issue({ category: 'invalid', severity: 'warning', text: `${text}; ignored`, where: where1 }));
      continue;
    }

    if (modifier === 'missing') {
      const table = tableFor(def.type);
      const exists = `EXISTS (SELECT 1 FROM ${table} x WHERE ${owner} AND x.param = ${q.p(name)})`;
      where.push(rawValue === 'true' ? `NOT ${exists}` : exists);
      continue;
    }

    const values = splitValues(rawValue);
    const ors: string[] = [];
    for (const value of values) {
      switch (def.type) {
        case 'token':
        case 'uri': {
          const cond: string[] = [`x.param = ${q.p(name)}`];
          if (def.type === 'uri') cond.push(`x.code = ${q.p(value)}`);
          else if (value.includes('|')) {
            const [system, code] = [value.slice(0, value.indexOf('|')), value.slice(value.indexOf('|') + 1)];
            if (system === '') cond.push(`(x.system IS NULL OR x.system = '')`);
            else cond.push(`x.system = ${q.p(system)}`);
            if (code !== '') cond.push(`x.code = ${q.p(code)}`);
          } else cond.push(`x.code = ${q.p(value)}`);
          ors.push(`EXISTS (SELECT 1 FROM idx_token x WHERE ${owner} AND ${cond.join(' AND ')})`);
          break;
        }
        case 'reference': {
          const [type, id] = parseReferenceValue(value);
          const targetType = modifier ?? type;
          const cond = [`x.param = ${q.p(name)}`, `x.target_id = ${q.p(id)}`];
          if (targetType) cond.push(`x.target_type = ${q.p(targetType)}`);
          ors.push(`EXISTS (SELECT 1 FROM idx_reference x WHERE ${owner} AND ${cond.join(' AND ')})`);
          break;
        }
        case 'date': {
          const [prefix, v] = splitPrefix(value);
          ors.push(`EXISTS (SELECT 1 FROM idx_date x WHERE ${owner} AND x.param = ${q.p(name)} AND ${dateCondition(prefix, 'x.low', 'x.high', dateRange(v, where1), q)})`);
          break;
        }
        case 'string': {
          const norm = normalizeString(value);
          const match =
            modifier === 'exact'
              ? `x.value = ${q.p(norm)}`
              : modifier === 'contains'
                ? `x.value LIKE ${q.p('%' + escapeLike(norm) + '%')}`
                : `x.value LIKE ${q.p(escapeLike(norm) + '%')}`;
          ors.push(`EXISTS (SELECT 1 FROM idx_string x WHERE ${owner} AND x.param = ${q.p(name)} AND ${match})`);
          break;
        }
        case 'number':
        case 'quantity': {
          const [prefix, v] = splitPrefix(value);
          const [num, system, code] = v.split('|');
          const cond = [`x.param = ${q.p(name)}`, numberCondition(prefix, 'x.value', num, q, where1)];
          if (system) cond.push(`x.system = ${q.p(system)}`);
          if (code) cond.push(`x.code = ${q.p(code)}`);
          ors.push(`EXISTS (SELECT 1 FROM idx_quantity x WHERE ${owner} AND ${cond.join(' AND ')})`);
          break;
        }
      }
    }
    const combined = ors.length === 1 ? ors[0] : `(${ors.join(' OR ')})`;
    where.push(modifier === 'not' ? `NOT ${combined}` : combined);
  }

  const filterParams = [...q.params];
  const filter = where.join(' AND ');
  const limit = Math.max(0, req.count ?? 20);
  let sql = `SELECT r.content, r.seq::text AS seq FROM resource r WHERE ${filter}`;
  if (req.cursor) {
    if (!/^\d{1,19}$/.test(req.cursor)) throw new OutcomeError('invalid', 'the paging cursor is not valid', '_cursor');
    sql += ` AND r.seq > ${q.p(req.cursor)}::bigint`;
  }
  sql += ` ORDER BY r.seq LIMIT ${limit + 1}`;
  const built: BuiltSearch = { sql, params: q.params, limit, issues };
  if (req.total === 'accurate' || req.total === 'estimate') {
    built.countSql = `SELECT count(*)::text AS n FROM resource r WHERE ${filter}`;
    built.countParams = filterParams;
  }
  return built;
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
