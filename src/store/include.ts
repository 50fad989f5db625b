/**
 * `_include` and `_revinclude` (with `:iterate`): the resources a page references, and the resources that
 * reference it, read from the reference index in a few set-based queries (never one query per resource).
 *
 * @see https://hl7.org/fhir/R4/search.html#include
 */
import type { Resource } from '../fhir/types.js';
import { OutcomeError, issue } from '../fhir/outcome.js';
import type { OperationOutcomeIssue } from '../fhir/types.js';
import { referenceParamsTo, searchParamsFor } from '../fhir/searchparams.js';
import type { Queryable } from './db.js';
import { parseStored } from './stored.js';

export interface IncludeSpec {
  kind: 'include' | 'revinclude';
  /** the resource type the parameter belongs to (`CarePlan` in CarePlan:care-team); `*` for every reference */
  sourceType: string;
  param: string;
  targetType?: string;
  iterate: boolean;
}

/** At most this many resources are included per page, so one search cannot pull the whole database. */
export const MAX_INCLUDED = 1000;
const MAX_ROUNDS = 5;

/** Parses `_include` / `_revinclude` values (`CarePlan:care-team`, `Provenance:target`, `CarePlan:activity-reference:Task`, `*`). */
export function parseIncludes(params: [string, string][], strict: boolean, issues: OperationOutcomeIssue[]): IncludeSpec[] {
  const out: IncludeSpec[] = [];
  for (const [name, value] of params) {
    const m = /^_(include|revinclude)(?::(iterate|recurse))?$/.exec(name);
    if (!m) continue;
    const kind = m[1] as IncludeSpec['kind'];
    const iterate = !!m[2];
    if (value === '*') {
      out.push({ kind, sourceType: '*', param: '*', iterate });
      continue;
    }
    const [sourceType, param, targetType] = value.split(':');
    const def = sourceType && param ? searchParamsFor(sourceType)?.get(param) : undefined;
    if (!def || def.type !== 'reference') {
      const text = `${name}=${value}: not a reference search parameter (Type:parameter[:targetType])`;
      if (strict) throw new OutcomeError('invalid', text, name);
      issues.push(issue({ severity: 'warning', text: `${text}; ignored`, where: name }));
      continue;
    }
    out.push({ kind, sourceType, param, targetType, iterate });
  }
  return out;
}

/** A row of include SQL: the included resource and the frontier resource it was reached from. */
export type IncludedRow = {
  content: string;
  src_type: string;
  src_id: string;
};

/**
 * One statement's worth of include SQL for the specs of a round: rows `content`, `src_type`, `src_id` (the frontier
 * resource each was reached from). `frontier` is a row source of (type, id) pairs, e.g. `SELECT * FROM unnest($1, $2)`;
 * spec values are appended to `params`.
 */
export function includeSql(specs: IncludeSpec[], frontier: string, frontierTypes: Iterable<string>, params: unknown[]): string {
  const p = (v: unknown): string => `$${params.push(v)}`;
  return specs
    .map((spec) => {
      // include: the resources the frontier points at; revinclude: the resources pointing at the frontier
      const [from, to] = spec.kind === 'include' ? ['target', 'resource'] : ['resource', 'target'];
      // the frontier's own rows are found by their resource's seq (schema migration 5), rows pointing at it by target
      const conds = [
        spec.kind === 'include'
          ? `x.resource_seq IN (SELECT f.seq FROM resource f WHERE (f.resource_type, f.id) IN (${frontier}))`
          : `(x.target_type, x.target_id) IN (${frontier})`,
      ];
      if (spec.sourceType !== '*') {
        // a parameter whose rows another holds (`CarePlan:patient` → `subject` rows pointing at a Patient)
        const def = searchParamsFor(spec.sourceType)?.get(spec.param);
        const targetType = spec.targetType ?? def?.indexedTargetType;
        conds.push(`x.resource_type = ${p(spec.sourceType)}::text AND x.param = ${p(def?.indexedAs ?? spec.param)}::text`);
        if (def?.indexedTargetType && targetType !== def.indexedTargetType) conds.push('FALSE');
        else if (targetType) conds.push(`x.target_type = ${p(targetType)}::text`);
      } else if (spec.kind === 'revinclude') {
        // every reference parameter that can point at the frontier's types, each an ordered range of the index
        const pairs = referenceParamsTo(frontierTypes);
        conds.push(`(x.resource_type, x.param) IN (SELECT * FROM unnest(${p(pairs.map((x) => x[0]))}::text[], ${p(pairs.map((x) => x[1]))}::text[]))`);
      }
      return `SELECT t.content, x.${to}_type AS src_type, x.${to}_id AS src_id FROM idx_reference x
         JOIN resource t ON t.resource_type = x.${from}_type AND t.id = x.${from}_id AND NOT t.deleted
         WHERE ${conds.join(' AND ')}`;
    })
    .join('\n UNION \n');
}

/** Included rows → resources: parsed once, without the matches and duplicates, only those reached from `from`. */
export function includedRows(rows: IncludedRow[], seen: Set<string>, from?: Set<string>): Resource[] {
  const out: Resource[] = [];
  for (const row of rows) {
    if (from && !from.has(`${row.src_type}/${row.src_id}`)) continue;
    const r = parseStored(row.content);
    const key = `${r.resourceType}/${r.id}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(r);
  }
  return out;
}

/**
 * The included resources for a page of matches, deduplicated and without the matches themselves.
 * `allow` is the per-request access decision: an included resource it refuses is left out.
 * `firstRound`: the candidates of round 0, when the caller read them together with the page (repository.search).
 */
export async function resolveIncludes(
  tx: Queryable,
  matches: Resource[],
  specs: IncludeSpec[],
  allow: (rs: Resource[]) => Promise<Resource[]> = async (rs) => rs,
  firstRound?: { rows: IncludedRow[] },
): Promise<Resource[]> {
  if (specs.length === 0 || matches.length === 0) return [];
  const seen = new Set(matches.map((r) => `${r.resourceType}/${r.id}`));
  const included: Resource[] = [];
  let frontier = matches;
  for (let round = 0; round < MAX_ROUNDS && frontier.length > 0 && included.length < MAX_INCLUDED; round++) {
    const active = specs.filter((s) => round === 0 || s.iterate);
    if (active.length === 0) break;
    let candidates: Resource[];
    if (round === 0 && firstRound) {
      // only what the visible matches reach (the page was read before the access decision)
      candidates = includedRows(firstRound.rows, seen, new Set(matches.map((r) => `${r.resourceType}/${r.id}`)));
    } else {
      // every spec of the round in one statement (a round trip costs more than the query)
      const params: unknown[] = [frontier.map((r) => r.resourceType), frontier.map((r) => r.id as string)];
      const sql = includeSql(active, 'SELECT * FROM unnest($1::text[], $2::text[])', new Set(frontier.map((r) => r.resourceType)), params);
      const rows = await tx.query<IncludedRow>(`${sql} LIMIT ${MAX_INCLUDED}`, params);
      candidates = includedRows(rows, seen);
    }
    const found = await allow(candidates);
    included.push(...found);
    frontier = found;
  }
  return included.slice(0, MAX_INCLUDED);
}
