/**
 * Rebuilding index rows from the stored resources, for schema migrations that change what a row holds.
 *
 * Migration 4 (`exact` on string rows): string values used to be written twice, normalised under `{param}` and as
 * written under `{param}:exact`, and parameters identical to another (`phonetic` = `name`) had rows of their own.
 * Which normalised row belongs to which written one cannot be told in SQL (accent folding is done here), so the
 * string index is rebuilt from the current resources, a chunk at a time, with its indexes created after the rows.
 *
 * The invariant this keeps: the rows stored for a resource are exactly `indexRows` of its current version. Updates
 * rely on it (they delete and insert only the rows that differ, repository.ts `indexChange`), so any change to
 * what extraction produces needs a migration that rebuilds the rows it affects, as this one does for strings.
 *
 * Migration 10 (values capped at INDEX_VALUE_BYTES, indexer.ts): rows written before it may hold longer values (up to
 * the B-tree limit, or beyond it where PostgreSQL could compress the entry). They are rewritten in place as
 * `indexRows` now writes them, so an update of their resource finds and removes them; every other row is unchanged.
 */
import { searchParamsFor } from '../fhir/searchparams.js';
import { resourceTypes } from '../fhir/definitions.js';
import type { Resource } from '../fhir/types.js';
import type { Queryable } from './db.js';
import { INDEX_VALUE_BYTES, indexKey, indexRows, recapStringRow } from './indexer.js';
import { arrayLiteral } from './content.js';

const CHUNK = 2000;
const TABLE_OF: Record<string, string> = { token: 'idx_token', uri: 'idx_token', reference: 'idx_reference', date: 'idx_date', quantity: 'idx_quantity', number: 'idx_quantity' };

export async function rebuildStringIndex(tx: Queryable): Promise<number> {
  await tx.query(`DROP INDEX IF EXISTS idx_string_lookup`);
  await tx.query(`DROP INDEX IF EXISTS idx_string_owner`);
  await tx.query(`DELETE FROM idx_string`);
  let after = '0';
  let written = 0;
  for (;;) {
    const rows = await tx.query<{ resource_type: string; id: string; patient_key: string | null; seq: string; content: string }>(
      `SELECT resource_type, id, patient_key, seq::text AS seq, content FROM resource WHERE NOT deleted AND seq > $1::bigint ORDER BY seq LIMIT ${CHUNK}`,
      [after],
    );
    if (rows.length === 0) break;
    after = rows[rows.length - 1].seq;
    const cols: unknown[][] = [[], [], [], [], [], []];
    for (const r of rows) {
      for (const s of indexRows(JSON.parse(r.content) as Resource).string) {
        cols[0].push(r.resource_type);
        cols[1].push(r.id);
        cols[2].push(s.param);
        cols[3].push(s.value);
        cols[4].push(s.exact);
        cols[5].push(r.patient_key);
      }
    }
    if (cols[0].length === 0) continue;
    await tx.query(
      `INSERT INTO idx_string (resource_type, resource_id, param, value, exact, patient_key)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])`,
      cols.map(arrayLiteral),
    );
    written += cols[0].length;
  }
  await tx.query(`CREATE INDEX idx_string_lookup ON idx_string (resource_type, param, value text_pattern_ops)`);
  await tx.query(`CREATE INDEX idx_string_owner ON idx_string (resource_type, resource_id)`);
  // rows of other tables under a parameter now held by an identical one (none in R4 beyond strings; kept general)
  for (const type of resourceTypes()) {
    for (const def of searchParamsFor(type)?.values() ?? []) {
      const table = def.indexedAs ? TABLE_OF[def.type] : undefined;
      if (table) await tx.query(`DELETE FROM ${table} WHERE resource_type = $1 AND param = $2`, [type, def.code]);
    }
  }
  return written;
}

/** Schema migration 10: string and token rows holding a value longer than INDEX_VALUE_BYTES, capped as the indexer caps it. */
export async function capLongIndexValues(tx: Queryable): Promise<number> {
  let changed = 0;
  const strings = await tx.query<{ seq: string; param: string; value: string; exact: string | null }>(
    `SELECT resource_seq::text AS seq, param, value, exact FROM idx_string WHERE octet_length(value) > $1 OR octet_length(exact) > $1`,
    [INDEX_VALUE_BYTES],
  );
  for (const r of strings) {
    const c = recapStringRow(r.value, r.exact);
    await tx.query(
      `UPDATE idx_string SET value = $1, exact = $2 WHERE resource_seq = $3::bigint AND param = $4 AND value = $5 AND exact IS NOT DISTINCT FROM $6`,
      [c.value, c.exact, r.seq, r.param, r.value, r.exact],
    );
    changed++;
  }
  const tokens = await tx.query<{ seq: string; param: string; system: string | null; code: string | null }>(
    `SELECT resource_seq::text AS seq, param, system, code FROM idx_token WHERE octet_length(system) > $1 OR octet_length(code) > $1`,
    [INDEX_VALUE_BYTES],
  );
  for (const r of tokens) {
    await tx.query(
      `UPDATE idx_token SET system = $1, code = $2 WHERE resource_seq = $3::bigint AND param = $4 AND system IS NOT DISTINCT FROM $5 AND code IS NOT DISTINCT FROM $6`,
      [indexKey(r.system), indexKey(r.code), r.seq, r.param, r.system, r.code],
    );
    changed++;
  }
  return changed;
}
