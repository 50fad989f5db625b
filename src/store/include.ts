/**
 * `_include` and `_revinclude` (with `:iterate`): the resources a page references, and the resources that
 * reference it, read from the reference index in a few set-based queries (never one query per resource).
 *
 * @see https://hl7.org/fhir/R4/search.html#include
 */
import type { Resource } from '../fhir/types.js';
import { OutcomeError, issue } from '../fhir/outcome.js';
import type { OperationOutcomeIssue } from '../fhir/types.js';
import { searchParamsFor } from '../fhir/searchparams.js';
import type { Queryable } from './db.js';

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

/**
 * The included resources for a page of matches, deduplicated and without the matches themselves.
 * `allow` is the per-request access decision: an included resource it refuses is left out.
 */
export async function resolveIncludes(
  tx: Queryable,
  matches: Resource[],
  specs: IncludeSpec[],
  allow: (rs: Resource[]) => Promise<Resource[]> = async (rs) => rs,
): Promise<Resource[]> {
  if (specs.length === 0 || matches.length === 0) return [];
  const seen = new Set(matches.map((r) => `${r.resourceType}/${r.id}`));
  const included: Resource[] = [];
  let frontier = matches;
  for (let round = 0; round < MAX_ROUNDS && frontier.length > 0 && included.length < MAX_INCLUDED; round++) {
    const active = specs.filter((s) => round === 0 || s.iterate);
    if (active.length === 0) break;
    const types = frontier.map((r) => r.resourceType);
    const ids = frontier.map((r) => r.id as string);
    const candidates: Resource[] = [];
    // every spec of the round in one statement (a round trip costs more than the query): include = the resources
    // the frontier points at; revinclude = the resources pointing at the frontier
    const params: unknown[] = [types, ids];
    const parts = active.map((spec) => {
      const [from, to] = spec.kind === 'include' ? ['target', 'resource'] : ['resource', 'target'];
      params.push(spec.sourceType, spec.param, spec.targetType ?? null);
      const [src, param, target] = [params.length - 2, params.length - 1, params.length];
      return `SELECT t.content FROM idx_reference x
         JOIN resource t ON t.resource_type = x.${from}_type AND t.id = x.${from}_id AND NOT t.deleted
         WHERE (x.${to}_type, x.${to}_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
           AND ($${src}::text = '*' OR (x.resource_type = $${src}::text AND x.param = $${param}::text))
           AND ($${target}::text IS NULL OR x.target_type = $${target}::text)`;
    });
    const rows = await tx.query<{ content: string }>(`${parts.join('\n UNION \n')} LIMIT ${MAX_INCLUDED}`, params);
    for (const row of rows) {
      const r = JSON.parse(row.content) as Resource;
      const key = `${r.resourceType}/${r.id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      candidates.push(r);
    }
    const found = await allow(candidates);
    included.push(...found);
    frontier = found;
  }
  return included.slice(0, MAX_INCLUDED);
}
