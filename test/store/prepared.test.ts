/**
 * Named (server-side prepared) statements on PostgreSQL and on the embedded store: one name per statement text,
 * none for statements without parameters, a bounded number per process — and the same answers as unnamed
 * statements, also once PostgreSQL has switched a statement to its generic plan (after five executions); on PGlite
 * also with statements in and out of transactions interleaved, after errors, and with NULLs and arrays, and always
 * planned for their values (PGlite runs no autovacuum to refresh a generic plan).
 */
import crypto from 'node:crypto';
import pg from 'pg';
import { PreparedStatements, openDb } from '../../src/store/db.js';
import { PG_URL, blankPglite } from '../helpers/backends.js';

test('a statement text keeps its name; no name without parameters or past the cap', () => {
  const ps = new PreparedStatements(2);
  const a = ps.nameFor('SELECT $1::int', [1]);
  expect(a).toMatch(/^cg_[A-Za-z0-9_-]+$/);
  expect(ps.nameFor('SELECT $1::int', [2])).toBe(a);
  expect(ps.nameFor('BEGIN')).toBeUndefined();
  expect(ps.nameFor('SELECT 1', [])).toBeUndefined();
  const b = ps.nameFor('SELECT $1::text', ['x']);
  expect(b).not.toBe(a);
  expect(ps.nameFor('SELECT $1::bigint', [3])).toBeUndefined(); // the third text: over the cap, runs unnamed
  expect(ps.nameFor('SELECT $1::text', ['y'])).toBe(b); // the named ones stay
  expect(ps.size).toBe(2);
});

(PG_URL ? test : test.skip)('on PostgreSQL, repeated named statements give the answers of their values', async () => {
  const schema = `cg_test_${crypto.randomBytes(5).toString('hex')}`;
  const db = await openDb({ databaseUrl: PG_URL!, schema, poolSize: 2 });
  try {
    await db.query(`CREATE TABLE t (k text, v int)`);
    await db.query(`INSERT INTO t SELECT 'k' || (i % 10), i FROM generate_series(1, 1000) i`);
    for (let round = 0; round < 12; round++) {
      const k = `k${round % 10}`;
      const rows = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM t WHERE k = $1 AND v > $2`, [k, round * 50]);
      const expected = Array.from({ length: 1000 }, (_, i) => i + 1).filter((i) => `k${i % 10}` === k && i > round * 50).length;
      expect(Number(rows[0].n)).toBe(expected);
    }
    // inside a transaction too (its own connection), where the server lists it as prepared under its name
    const [inTx, prepared] = await db.transaction(async (tx) => [
      await tx.query<{ n: string }>(`SELECT count(*)::text AS n FROM t WHERE k = $1 AND v > $2`, ['k3', 0]),
      await tx.query<{ name: string; statement: string }>(`SELECT name, statement FROM pg_prepared_statements`),
    ]);
    expect(Number(inTx[0].n)).toBe(100);
    expect(prepared).toContainEqual({ name: expect.stringMatching(/^cg_/), statement: `SELECT count(*)::text AS n FROM t WHERE k = $1 AND v > $2` });
  } finally {
    await db.close();
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  }
});

test('on the embedded store, named statements give the answers of their values, in and out of transactions', async () => {
  const { db, drop } = await blankPglite();
  try {
    await db.query(`CREATE TABLE t (k text, v int, tags text[])`);
    await db.query(`INSERT INTO t SELECT 'k' || (i % 10), i, ARRAY['a' || (i % 3)] FROM generate_series(1, 1000) i`);
    const count = `SELECT count(*)::text AS n FROM t WHERE k = $1 AND v > $2 AND ($3::text IS NULL OR $3 = ANY(tags))`;
    const expected = (k: string, above: number, tag: string | null) =>
      Array.from({ length: 1000 }, (_, i) => i + 1).filter((i) => `k${i % 10}` === k && i > above && (tag === null || `a${i % 3}` === tag)).length;
    for (let round = 0; round < 12; round++) {
      const [k, above, tag] = [`k${round % 10}`, round * 50, round % 2 ? null : `a${round % 3}`];
      expect(Number((await db.query<{ n: string }>(count, [k, above, tag]))[0].n)).toBe(expected(k, above, tag));
    }
    // statements inside transactions and outside them, started together: each gets its own answer, and a
    // transaction's writes are seen by its own statements only until it commits
    const results = await Promise.all([
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO t (k, v, tags) VALUES ($1, $2, $3)`, ['k1', 5000, ['a9']]);
        return Number((await tx.query<{ n: string }>(count, ['k1', 4000, 'a9']))[0].n);
      }),
      ...Array.from({ length: 5 }, (_, i) => db.query<{ n: string }>(count, [`k${i}`, 0, null]).then((r) => Number(r[0].n))),
    ]);
    expect(results).toEqual([1, 100, 100, 100, 100, 100]);
    // an error (a value of the wrong type, a unique violation in a transaction) leaves the statement usable
    await expect(db.query(count, ['k1', 'not a number', null])).rejects.toThrow(/integer/);
    await db.query(`CREATE UNIQUE INDEX t_v ON t (v)`);
    await expect(db.transaction((tx) => tx.query(`INSERT INTO t (k, v, tags) VALUES ($1, $2, $3)`, ['k1', 5000, ['a9']]))).rejects.toMatchObject({ code: '23505' });
    expect(Number((await db.query<{ n: string }>(count, ['k1', 4000, 'a9']))[0].n)).toBe(1);
    // parsed once, under its name, and planned for its values every time: no autovacuum here would ever replace a
    // generic plan made while the tables were small
    const prepared = await db.query<{ name: string; statement: string; generic_plans: string; custom_plans: string }>(
      `SELECT name, statement, generic_plans::text, custom_plans::text FROM pg_prepared_statements WHERE statement = $1`,
      [count],
    );
    expect(prepared).toEqual([{ name: expect.stringMatching(/^cg_/), statement: count, generic_plans: '0', custom_plans: expect.any(String) }]);
    expect(Number(prepared[0].custom_plans)).toBeGreaterThanOrEqual(12);
  } finally {
    await db.close();
    await drop();
  }
});
