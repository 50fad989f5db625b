/**
 * Schema migrations on a store written by an older version: migration 3 gives every reference index row its
 * resource's seq and merges identical rows of one resource, without touching anything else.
 */
import crypto from 'node:crypto';
import pg from 'pg';
import { openDb, type Db } from '../../src/store/db.js';
import { MIGRATIONS, migrate } from '../../src/store/schema.js';
import { PG_URL } from '../helpers/backends.js';

const targets: [string, () => Promise<{ db: Db; drop: () => Promise<void> }>][] = [
  ['pglite', async () => ({ db: await openDb({ dataDir: 'memory://' }), drop: async () => undefined })],
];
if (PG_URL) {
  targets.push([
    'postgres',
    async () => {
      const schema = `cg_test_${crypto.randomBytes(5).toString('hex')}`;
      return {
        db: await openDb({ databaseUrl: PG_URL, schema }),
        drop: async () => {
          const c = new pg.Client({ connectionString: PG_URL });
          await c.connect();
          await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
          await c.end();
        },
      };
    },
  ]);
}

describe.each(targets)('migration 3 on %s', (_name, open) => {
  test('reference rows get their resource seq; duplicates of one resource are merged, others kept', async () => {
    const { db, drop } = await open();
    try {
      // the schema as versions 1 and 2 left it
      await db.transaction(async (tx) => {
        await tx.query(`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
        for (const m of MIGRATIONS.filter((x) => x.version <= 2)) {
          for (const stmt of m.sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) await tx.query(stmt);
          await tx.query(`INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
        }
        for (const id of ['t1', 't2']) {
          await tx.query(`INSERT INTO resource (resource_type, id, version_id, last_updated, content) VALUES ('CareTeam', $1, 1, now(), '{}')`, [id]);
        }
        const row = `INSERT INTO idx_reference (resource_type, resource_id, param, target_type, target_id) VALUES ('CareTeam', $1, $2, 'Organization', $3)`;
        await tx.query(row, ['t1', 'participant', 'elva']);
        await tx.query(row, ['t1', 'participant', 'elva']); // the same organisation named twice by one team
        await tx.query(row, ['t1', 'participant', 'tartu']);
        await tx.query(row, ['t2', 'participant', 'elva']);
      });
      expect(await migrate(db)).toEqual(MIGRATIONS.filter((x) => x.version > 2).map((x) => x.version));
      const rows = await db.query<{ resource_id: string; target_id: string; resource_seq: string; seq: string }>(
        `SELECT x.resource_id, x.target_id, x.resource_seq::text, r.seq::text FROM idx_reference x JOIN resource r ON r.resource_type = x.resource_type AND r.id = x.resource_id ORDER BY 1, 2`,
      );
      expect(rows.map((r) => `${r.resource_id}>${r.target_id}`)).toEqual(['t1>elva', 't1>tartu', 't2>elva']);
      for (const r of rows) expect(r.resource_seq).toBe(r.seq);
    } finally {
      await db.close();
      await drop();
    }
  });
});
