/**
 * The five search index tables, one descriptor each: its columns after (resource_type, resource_id, param), their
 * PostgreSQL types and whether they may be NULL. Diffing a resource's rows and the SQL that deletes and inserts them
 * (writer.ts `writeBatch`) are written once over these descriptors.
 */
import type { IndexRows } from './indexer.js';

export type Kind = 'token' | 'string' | 'reference' | 'date' | 'quantity';

interface Column {
  /** the column */
  name: string;
  /** the property of an index row (indexer.ts `IndexRows`) */
  field: string;
  type: 'text' | 'timestamptz' | 'numeric';
  /** may be NULL: compared with IS NOT DISTINCT FROM */
  nullable: boolean;
}

export interface IndexTable {
  kind: Kind;
  table: string;
  cols: Column[];
}

const col = (name: string, field: string, type: Column['type'], nullable = false): Column => ({ name, field, type, nullable });

export const INDEX_TABLES: readonly IndexTable[] = [
  { kind: 'token', table: 'idx_token', cols: [col('system', 'system', 'text', true), col('code', 'code', 'text', true)] },
  { kind: 'string', table: 'idx_string', cols: [col('value', 'value', 'text'), col('exact', 'exact', 'text', true)] },
  { kind: 'reference', table: 'idx_reference', cols: [col('target_type', 'targetType', 'text'), col('target_id', 'targetId', 'text')] },
  { kind: 'date', table: 'idx_date', cols: [col('low', 'low', 'timestamptz'), col('high', 'high', 'timestamptz')] },
  { kind: 'quantity', table: 'idx_quantity', cols: [col('value', 'value', 'numeric'), col('system', 'system', 'text', true), col('code', 'code', 'text', true)] },
];

export type IndexRow = { param: string };

/** The value of a column in a row (undefined is NULL). */
export const valueOf = (c: Column, row: IndexRow): unknown => (row as unknown as Record<string, unknown>)[c.field] ?? null;

const NUL = '\u0000';
/** What identifies an index row of a resource (the columns a delete matches on). */
const rowKey = (t: IndexTable, row: IndexRow): string => [row.param, ...t.cols.map((c) => valueOf(c, row) ?? NUL)].join(NUL);

export const rowsOf = (rows: IndexRows, kind: Kind): IndexRow[] => rows[kind] as IndexRow[];

/**
 * The rows to delete and to insert to go from `before` to `after`; undefined when a plain rewrite is needed: the
 * compartment changed (every row carries it), or a list holds the same row twice (a delete by value would take both).
 */
export function indexChange(before: IndexRows, after: IndexRows): { removed: IndexRows; added: IndexRows } | undefined {
  if (before.patientKey !== after.patientKey) return undefined;
  const removed = { patientKey: before.patientKey } as IndexRows;
  const added = { patientKey: after.patientKey } as IndexRows;
  for (const t of INDEX_TABLES) {
    const was = rowsOf(before, t.kind);
    const is = rowsOf(after, t.kind);
    const old = new Set(was.map((r) => rowKey(t, r)));
    const now = new Set(is.map((r) => rowKey(t, r)));
    if (old.size !== was.length || now.size !== is.length) return undefined;
    (removed[t.kind] as IndexRow[]) = was.filter((r) => !now.has(rowKey(t, r)));
    (added[t.kind] as IndexRow[]) = is.filter((r) => !old.has(rowKey(t, r)));
  }
  return { removed, added };
}

/** `t.col = d.v0 AND …`: a stored row equal to the one described by `d` (NULL equal to NULL where a column may be NULL). */
export const sameRow = (t: IndexTable): string => t.cols.map((c, i) => (c.nullable ? `t.${c.name} IS NOT DISTINCT FROM d.v${i}` : `t.${c.name} = d.v${i}`)).join(' AND ');
