/**
 * Import workers (src/social/workers.ts) on a real PostgreSQL: a worker commits a lane's batch into the same store
 * as the process; a connection lost in the middle of a batch fails that batch as an error (never as rejected rows)
 * and the lane goes on with a new connection; a worker that cannot open the store stops the start. The import
 * end to end with workers is test/social/import.test.ts ("postgres with two import workers").
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { CarePlan } from '@medplum/fhirtypes';
import { defaultImportWorkers, loadConfig } from '../../src/config.js';
import { ImportWorkers } from '../../src/social/workers.js';
import { socialMapping } from '../../src/social/mapping.js';
import { readRecords } from '../../src/social/records.js';
import { checkRecord, contributionFor, type Decision } from '../../src/social/convert.js';
import { planIdFor } from '../../src/careplan/assemble.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import type { Store } from '../../src/store/index.js';
import { PG_URL, postgresBackend, type Backend } from '../helpers/backends.js';

describe('IMPORT_WORKERS', () => {
  test('none below four cores, then one a core but the process own, at most four', () => {
    expect([1, 2, 3, 4, 6, 8, 64].map((n) => defaultImportWorkers(n))).toEqual([0, 0, 0, 3, 4, 4, 4]);
  });
  test('a set number is used; a bad one stops the start', () => {
    expect(loadConfig({ IMPORT_WORKERS: '2' }).importWorkers).toBe(2);
    expect(loadConfig({ IMPORT_WORKERS: '0' }).importWorkers).toBe(0);
    expect(() => loadConfig({ IMPORT_WORKERS: 'two' })).toThrow(/IMPORT_WORKERS must be a non-negative integer/);
    expect(() => loadConfig({ IMPORT_WORKERS: '9' })).toThrow(/IMPORT_WORKERS must be at most 8/);
  });
});

const onPostgres = PG_URL ? describe : describe.skip;

onPostgres('import workers on PostgreSQL', () => {
  const mapping = socialMapping('tartu-linn')!;
  const decisions: Decision[] = [...readRecords(mapping, fs.readFileSync(path.resolve('mappings/social/examples/tartu-linn.csv')))].map(
    (raw) => checkRecord(mapping, raw, '2026-11-20').decision!,
  );
  let backend: Backend;
  let store: Store;
  let workers: ImportWorkers;
  beforeAll(async () => {
    backend = postgresBackend(PG_URL!);
    store = await backend.open(); // the schema, migrated (workers do not migrate)
    workers = await ImportWorkers.start(1, { databaseUrl: backend.env().DATABASE_URL });
  });
  afterAll(async () => {
    await workers?.close();
    await store?.close();
    await backend?.cleanup();
  });

  test('a batch is committed by the worker into the store the process reads', async () => {
    expect(decisions).toHaveLength(4);
    const outcomes = await workers.run(0, { source: 'tartu-linn', inboxId: 'inbox-w1', rows: decisions.slice(0, 2) });
    expect(outcomes).toEqual([{ changed: true }, { changed: true }]);
    const patientId = contributionFor(mapping, decisions[0], 'inbox-w1').patient.id!;
    const plan = await store.repo.read<CarePlan>('CarePlan', planIdFor(patientId));
    expect(plan.activity).toHaveLength(1);
    // the same rows again: accepted, nothing changes
    expect(await workers.run(0, { source: 'tartu-linn', inboxId: 'inbox-w1', rows: decisions.slice(0, 2) })).toEqual([{ changed: false }, { changed: false }]);
  });

  test('a source the worker has no mapping for fails the batch as an error', async () => {
    await expect(workers.run(0, { source: 'nowhere', inboxId: 'inbox-w2', rows: decisions.slice(2, 3) })).rejects.toThrow(/no mapping for social-care source "nowhere"/);
  });

  test('a connection lost in the middle of a batch fails the batch; the next one runs on a new connection', async () => {
    const d = decisions[2];
    const patientId = contributionFor(mapping, d, 'inbox-w3').patient.id!;
    // the test holds the person's plan lock, so the worker's transaction waits on it
    const holder = new pg.Client({ connectionString: PG_URL });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`plan|${patientId}`]);
      const pending = workers.run(0, { source: 'tartu-linn', inboxId: 'inbox-w3', rows: [d] });
      let pid: number | undefined;
      for (let i = 0; i < 200 && pid === undefined; i++) {
        const rows = await holder.query<{ pid: number }>(
          `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
             AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)`,
          [`plan|${patientId}`],
        );
        pid = rows.rows[0]?.pid;
        if (pid === undefined) await new Promise((r) => setTimeout(r, 25));
      }
      expect(pid).toBeDefined();
      await holder.query('SELECT pg_terminate_backend($1)', [pid]);
      const err = await pending.then(
        () => undefined,
        (e: unknown) => e,
      );
      // not rows refused for their content: the store's failure, so the file is not finished and can be run again
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(OutcomeError);
      expect((err as Error).message).toMatch(/^import worker: /);
      await holder.query('ROLLBACK');
    } finally {
      await holder.end();
    }
    expect(await workers.run(0, { source: 'tartu-linn', inboxId: 'inbox-w3', rows: [d] })).toEqual([{ changed: true }]);
    const plan = await store.repo.read<CarePlan>('CarePlan', planIdFor(patientId));
    expect(plan.activity).toHaveLength(1);
  });

  test('a worker that cannot open the store stops the start, saying why', async () => {
    await expect(ImportWorkers.start(1, { databaseUrl: 'postgres://postgres@127.0.0.1:1/test' })).rejects.toThrow(/import worker failed: .*ECONNREFUSED/);
  });
});
