/**
 * Schema migrations on a store written by an older version: migration 3 gives every reference index row its
 * resource's seq and merges identical rows of one resource, without touching anything else; migration 4 rebuilds
 * the string index with one row per value (the written form in `exact`), without rows of its own for `phonetic` (name's)
 * or `patient` (subject's pointing at a Patient); migration 5 gives every index row its resource's seq and keys the owner
 * indexes by it; migration 8 lets inbox entries name the instance that claimed them; migration 9 makes the identifier
 * columns compare byte by byte.
 *
 * @slow builds old schemas from scratch (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import crypto from 'node:crypto';
import pg from 'pg';
import type { Basic } from '@medplum/fhirtypes';
import { openDb, type Db } from '../../src/store/db.js';
import { BYTEWISE_COLUMNS, MIGRATIONS, migrate } from '../../src/store/schema.js';
import { Repository } from '../../src/store/repository.js';
import { PG_URL, blankPglite } from '../helpers/backends.js';

const targets: [string, () => Promise<{ db: Db; drop: () => Promise<void> }>][] = [
  ['pglite', blankPglite],
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
    await onFreshDb(open, async (db) => {
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
    });
  });
});

/** The schema as the migrations up to `version` left it. */
/** Runs fn on a new, empty database of a target, closed and dropped however fn ends. */
async function onFreshDb(open: (typeof targets)[number][1], fn: (db: Db) => Promise<void>): Promise<void> {
  const { db, drop } = await open();
  try {
    await fn(db);
  } finally {
    await db.close();
    await drop();
  }
}

async function schemaAt(db: Db, version: number): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.query(`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    for (const m of MIGRATIONS.filter((x) => x.version <= version)) {
      for (const stmt of m.sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) await tx.query(stmt);
      if (m.run) await m.run(tx);
      await tx.query(`INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
    }
  });
}

describe.each(targets)('migration 4 on %s', (_name, open) => {
  test('string rows are rebuilt from the resources: one per value with its written form, no :exact or phonetic rows', async () => {
    await onFreshDb(open, async (db) => {
      await schemaAt(db, 3);
      const patient = { resourceType: 'Patient', id: 'p1', meta: { versionId: '2' }, name: [{ family: 'Õunapuu', given: ['Tõnu'] }], address: [{ postalCode: '61507' }] };
      await db.query(`INSERT INTO resource (resource_type, id, version_id, last_updated, patient_key, content) VALUES ('Patient', 'p1', 2, now(), 'p1', $1)`, [JSON.stringify(patient)]);
      await db.query(`INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content) VALUES ('Patient', 'gone', 2, now(), true, '{"resourceType":"Patient","id":"gone","name":[{"family":"Kask"}]}')`);
      // rows as the old indexer wrote them, and one left over from version 1 of p1 (Tamm)
      const row = `INSERT INTO idx_string (resource_type, resource_id, param, value, patient_key) VALUES ('Patient', $1, $2, $3, $1)`;
      for (const [param, value] of [['family', 'ounapuu'], ['family:exact', 'Õunapuu'], ['phonetic', 'ounapuu'], ['phonetic:exact', 'Õunapuu'], ['family', 'tamm']]) {
        await db.query(row, ['p1', param, value]);
      }
      await db.query(row, ['gone', 'family', 'kask']);
      const ref = `INSERT INTO idx_reference (resource_type, resource_id, param, target_type, target_id, resource_seq) VALUES ('CarePlan', 'cp', $1, 'Patient', 'p1', 1)`;
      await db.query(ref, ['subject']);
      await db.query(ref, ['patient']); // a copy of the subject row: now read from it

      expect(await migrate(db)).toEqual(MIGRATIONS.filter((x) => x.version > 3).map((x) => x.version));
      const rows = await db.query<{ resource_id: string; param: string; value: string; exact: string | null; patient_key: string }>(
        `SELECT resource_id, param, value, exact, patient_key FROM idx_string ORDER BY param, value`,
      );
      expect(rows.map((r) => [r.resource_id, r.param, r.value, r.exact])).toEqual([
        ['p1', 'address', '61507', null],
        ['p1', 'address-postalcode', '61507', null],
        ['p1', 'family', 'ounapuu', 'Õunapuu'],
        ['p1', 'given', 'tonu', 'Tõnu'],
        ['p1', 'name', 'ounapuu', 'Õunapuu'],
        ['p1', 'name', 'tonu', 'Tõnu'],
      ]);
      expect(rows.every((r) => r.patient_key === 'p1')).toBe(true);
      // the string indexes are back; the two reference indexes the target_seq index replaces are gone, the rows are not
      const indexes = (await db.query<{ indexname: string }>(`SELECT indexname FROM pg_indexes WHERE tablename IN ('idx_string', 'idx_reference') AND schemaname = current_schema()`)).map((r) => r.indexname).sort();
      expect(indexes).toEqual(['idx_reference_owner', 'idx_reference_target_seq', 'idx_string_lookup', 'idx_string_owner']);
      expect((await db.query<{ param: string }>(`SELECT param FROM idx_reference`)).map((r) => r.param)).toEqual(['subject']);

      const repo = new Repository(db, {});
      const ids = async (params: [string, string][]): Promise<string[]> => (await repo.search({ resourceType: 'Patient', params })).resources.map((r) => r.id!);
      expect(await ids([['family:exact', 'Õunapuu']])).toEqual(['p1']);
      expect(await ids([['phonetic', 'oun']])).toEqual(['p1']);
      expect(await ids([['family', 'tamm']])).toEqual([]);
      expect(await migrate(db)).toEqual([]);
    });
  });
});

describe.each(targets)('migration 5 on %s', (_name, open) => {
  test('every index row gets its resource seq, rows of no resource are dropped, the owner indexes are on the seq, the rewritten tables in seq order', async () => {
    await onFreshDb(open, async (db) => {
      await schemaAt(db, 4);
      const obs = {
        resourceType: 'Observation',
        id: 'o1',
        meta: { versionId: '1' },
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '15074-8' }] },
        subject: { reference: 'Patient/p1' },
        effectiveDateTime: '2026-11-02T08:00:00Z',
        valueQuantity: { value: 5.5, system: 'http://unitsofmeasure.org', code: 'mmol/L' },
      };
      const patient = { resourceType: 'Patient', id: 'p1', meta: { versionId: '1' }, name: [{ family: 'Tamm' }] };
      await db.query(`INSERT INTO resource (resource_type, id, version_id, last_updated, patient_key, content) VALUES ('Patient', 'p1', 1, now(), 'p1', $1)`, [JSON.stringify(patient)]);
      await db.query(`INSERT INTO resource (resource_type, id, version_id, last_updated, patient_key, content) VALUES ('Observation', 'o1', 1, now(), 'p1', $1)`, [JSON.stringify(obs)]);
      // rows as version 4 wrote them (no seq but on reference rows), and one row whose resource is not there
      await db.query(`INSERT INTO idx_string (resource_type, resource_id, param, value, patient_key) VALUES ('Patient', 'p1', 'family', 'tamm', 'p1'), ('Patient', 'p1', 'name', 'tamm', 'p1')`);
      await db.query(`INSERT INTO idx_token (resource_type, resource_id, param, system, code, patient_key) VALUES ('Observation', 'o1', 'code', 'http://loinc.org', '15074-8', 'p1'), ('Observation', 'o1', 'status', NULL, 'final', 'p1'), ('Observation', 'ghost', 'status', NULL, 'final', 'p1')`);
      await db.query(`INSERT INTO idx_date (resource_type, resource_id, param, low, high, patient_key) VALUES ('Observation', 'o1', 'date', '2026-11-02T08:00:00Z', '2026-11-02T08:00:00.999Z', 'p1')`);
      await db.query(`INSERT INTO idx_quantity (resource_type, resource_id, param, value, system, code, patient_key) VALUES ('Observation', 'o1', 'value-quantity', 5.5, 'http://unitsofmeasure.org', 'mmol/L', 'p1')`);
      await db.query(`INSERT INTO idx_reference (resource_type, resource_id, param, target_type, target_id, patient_key, resource_seq) SELECT 'Observation', 'o1', 'subject', 'Patient', 'p1', 'p1', seq FROM resource WHERE id = 'o1'`);

      expect(await migrate(db)).toEqual(MIGRATIONS.filter((x) => x.version > 4).map((x) => x.version));
      for (const t of ['idx_token', 'idx_string', 'idx_date', 'idx_quantity', 'idx_reference']) {
        const rows = await db.query<{ resource_id: string; ok: boolean }>(
          `SELECT x.resource_id, x.resource_seq = (SELECT seq FROM resource r WHERE r.resource_type = x.resource_type AND r.id = x.resource_id) AS ok FROM ${t} x`,
        );
        expect(rows.length).toBeGreaterThan(0);
        expect(rows.every((r) => r.ok === true)).toBe(true);
        expect(rows.map((r) => r.resource_id)).not.toContain('ghost');
        const defs = (await db.query<{ indexdef: string }>(`SELECT indexdef FROM pg_indexes WHERE indexname = $1 AND schemaname = current_schema()`, [`${t}_owner`])).map((r) => r.indexdef);
        expect(defs).toHaveLength(1);
        expect(defs[0]).toMatch(/\(resource_seq\)$/);
      }
      // the rewritten tables are in seq order, as a new store's are
      const clustered = await db.query<{ relname: string }>(
        `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ix ON ix.oid = i.indexrelid
         WHERE i.indisclustered AND ix.relname LIKE 'idx\\_%\\_owner' AND c.relnamespace = current_schema()::regnamespace ORDER BY 1`,
      );
      expect(clustered.map((r) => r.relname)).toEqual(['idx_date', 'idx_quantity', 'idx_string', 'idx_token']);

      // search through every table, a sort key, a chain, an include; then an update changes the rows by seq
      const repo = new Repository(db, {});
      const ids = async (type: string, params: [string, string][]): Promise<string[]> => (await repo.search({ resourceType: type, params })).resources.map((r) => r.id!);
      expect(await ids('Observation', [['code', 'http://loinc.org|15074-8'], ['status', 'final'], ['date', 'ge2026-11-01'], ['value-quantity', 'lt6'], ['subject.family', 'tamm']])).toEqual(['o1']);
      expect(await ids('Patient', [['family', 'tam'], ['_has:Observation:subject:code', '15074-8']])).toEqual(['p1']);
      expect(await ids('Observation', [['code:missing', 'false'], ['_sort', '-date']])).toEqual(['o1']);
      const inc = await repo.search({ resourceType: 'Observation', params: [['_id', 'o1'], ['_include', 'Observation:subject']] });
      expect(inc.included.map((r) => r.id)).toEqual(['p1']);
      await repo.update({ ...obs, meta: undefined, status: 'amended', valueQuantity: { ...obs.valueQuantity, value: 7.1 } } as never);
      expect(await ids('Observation', [['status', 'final']])).toEqual([]);
      expect(await ids('Observation', [['status', 'amended'], ['value-quantity', 'gt7']])).toEqual(['o1']);
      expect(await migrate(db)).toEqual([]);
    });
  });
});

describe.each(targets)('migration 6 on %s', (name, open) => {
  test('resource texts and payloads are compressed with lz4 where the server has it; texts read back as written', async () => {
    await onFreshDb(open, async (db) => {
      await migrate(db);
      const lz4 = (await db.query<{ lz4: boolean }>(`SELECT 'lz4' = ANY(enumvals) AS lz4 FROM pg_settings WHERE name = 'default_toast_compression'`))[0].lz4;
      // the PostgreSQL here is built with lz4, the embedded store without
      expect(lz4).toBe(name === 'postgres');
      const cols = await db.query<{ col: string; c: string }>(
        `SELECT c.relname || '.' || a.attname AS col, a.attcompression::text AS c FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = current_schema()::regnamespace AND (c.relname, a.attname) IN (('resource', 'content'), ('resource_version', 'content'), ('inbox', 'payload')) ORDER BY 1`,
      );
      expect(cols.map((r) => `${r.col}=${r.c}`)).toEqual(
        ['inbox.payload', 'resource.content', 'resource_version.content'].map((c) => `${c}=${lz4 ? 'l' : ''}`),
      );
      const repo = new Repository(db, {});
      const note = 'Koduhooldus kolm korda nädalas; tütar on hooldaja. '.repeat(80); // ~4 KB: compressed when stored
      const saved = (await repo.create<Basic>({ resourceType: 'Basic', code: { text: note } })).resource;
      const comp = await db.query<{ m: string | null }>(`SELECT pg_column_compression(content) AS m FROM resource WHERE id = $1`, [saved.id]);
      expect(comp[0].m).toBe(lz4 ? 'lz4' : 'pglz');
      expect((await repo.read<Basic>('Basic', saved.id!)).code.text).toBe(note);
      expect(await migrate(db)).toEqual([]);
    });
  });
});

describe.each(targets)('migration 8 on %s', (_name, open) => {
  test('inbox entries get claimed_by; entries stored before keep none; inbox_receive records the claimer', async () => {
    await onFreshDb(open, async (db) => {
      await schemaAt(db, 7);
      const args = (id: string, claimer?: string): unknown[] => [
        [id], ['mllp'], ['S'], [id], ['h'], [null], new Date().toISOString(), ['processing'], [null], [Buffer.from('MSH')], [null], [null], [true], 120,
        ...(claimer ? [claimer] : []),
      ];
      const call14 = `SELECT * FROM inbox_receive($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz, $8::text[], $9::text[], $10::bytea[], $11::text[], $12::text[], $13::boolean[], $14::integer)`;
      await db.query(call14, args('old'));
      expect(await migrate(db)).toEqual(MIGRATIONS.filter((x) => x.version > 7).map((x) => x.version));
      await db.query(call14.replace('$14::integer)', '$14::integer, $15::text)'), args('new', 'instance-1'));
      const rows = await db.query<{ id: string; claimed_by: string | null }>(`SELECT id, claimed_by FROM inbox ORDER BY id`);
      expect(rows).toEqual([{ id: 'new', claimed_by: 'instance-1' }, { id: 'old', claimed_by: null }]);
      await expect(db.query(call14, args('again'))).rejects.toThrow(/does not exist/); // one inbox_receive, the new one
      expect(await migrate(db)).toEqual([]);
    });
  });
});

describe.each(targets)('migration 9 on %s', (_name, open) => {
  test('identifier columns compare byte by byte; every index is rebuilt and still serves search', async () => {
    await onFreshDb(open, async (db) => {
      await schemaAt(db, 8);
      const repo = new Repository(db, {});
      const saved = (await repo.create<Basic>({ resourceType: 'Basic', code: { coding: [{ system: 'urn:x', code: 'Kõne' }] }, subject: { reference: 'Patient/p1' } })).resource;
      const indexes = `SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1`;
      const before = (await db.query<{ indexname: string }>(indexes)).map((r) => r.indexname);
      expect(await migrate(db)).toEqual(MIGRATIONS.filter((x) => x.version > 8).map((x) => x.version));
      // later migrations add tables of their own (audit_head); migration 9 renames none
      expect((await db.query<{ indexname: string }>(indexes)).map((r) => r.indexname).filter((n) => n !== 'audit_head_pkey' && n !== 'server_secret_pkey')).toEqual(before);
      const cols = await db.query<{ col: string; coll: string }>(
        `SELECT c.relname || '.' || a.attname AS col, co.collname AS coll FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid JOIN pg_collation co ON co.oid = a.attcollation
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
           AND a.atttypid = 'text'::regtype`,
      );
      const bytewise = new Set(BYTEWISE_COLUMNS.flatMap(([t, cs]) => cs.map((c) => `${t}.${c}`)));
      expect(cols.filter((c) => bytewise.has(c.col)).map((c) => c.coll)).toEqual([...bytewise].map(() => 'C'));
      expect(cols.find((c) => c.col === 'resource.content')?.coll).toBe('default');
      const found = await repo.search({ resourceType: 'Basic', params: [['code', 'urn:x|Kõne'], ['subject', 'Patient/p1']] });
      expect(found.resources.map((r) => r.id)).toEqual([saved.id]);
      expect(await migrate(db)).toEqual([]);
    });
  });
});

describe.each(targets)('migration 11 on %s', (_name, open) => {
  test('the audit chain head starts as the chain is: its length and last hash', async () => {
    await onFreshDb(open, async (db) => {
      await schemaAt(db, 10);
      await db.transaction(async (tx) => {
        await tx.query(`INSERT INTO audit_chain (event_id, prev, hash) VALUES ('e1', $1, 'h1'), ('e2', 'h1', 'h2')`, ['0'.repeat(64)]);
      });
      expect(await migrate(db)).toEqual([11]);
      expect(await db.query(`SELECT length::int AS length, hash, mac FROM audit_head`)).toEqual([{ length: 2, hash: 'h2', mac: null }]);
    });
    await onFreshDb(open, async (db) => {
      await migrate(db);
      expect(await db.query(`SELECT length::int AS length, hash FROM audit_head`)).toEqual([{ length: 0, hash: '0'.repeat(64) }]);
    });
  });
});
