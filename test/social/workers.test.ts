/**
 * Import workers (src/social/workers.ts) on a real PostgreSQL: a worker commits a lane's batch into the same store
 * as the process; a connection lost in the middle of a batch fails that batch as an error (never as rejected rows)
 * and the lane goes on with a new connection; a worker that cannot open the store stops the start. The import
 * end to end with workers is test/social/import.test.ts ("postgres with two import workers").
 *
 * @slow worker threads and cut connections (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import crypto from 'node:crypto';
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
import { isikukoodCheckDigit } from '../../src/fhir/identifiers.js';
import type { Store } from '../../src/store/index.js';
import { PG_URL, postgresBackend, type Backend } from '../helpers/backends.js';
import { killed, spawnGateway, useGateway } from '../helpers/gateway.js';

/**
 * The Tartu example export with people of its own (same birth dates, other serial numbers): advisory locks are per
 * database, so the plan locks these tests hold and cut must not be the ones another suite takes for the example's
 * people at the same time.
 */
const EXAMPLE = (() => {
  const text = fs.readFileSync(path.resolve('mappings/social/examples/tartu-linn.csv'), 'utf8');
  const base = crypto.randomInt(0, 900);
  const fresh = new Map<string, string>();
  return Buffer.from(
    text.replace(/\b[1-6]\d{10}\b/g, (old) => {
      if (!fresh.has(old)) {
        let serial = base + fresh.size;
        if (String(serial).padStart(3, '0') === old.slice(7, 10)) serial += 50;
        const ten = old.slice(0, 7) + String(serial).padStart(3, '0');
        fresh.set(old, ten + isikukoodCheckDigit(ten));
      }
      return fresh.get(old)!;
    }),
    'utf8',
  );
})();

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
  const decisions: Decision[] = [...readRecords(mapping, EXAMPLE)].map(
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
      // its failure is taken as it comes (a rejection nobody listens to yet would fail the test run)
      const failed = workers.run(0, { source: 'tartu-linn', inboxId: 'inbox-w3', rows: [d] }).then(
        () => undefined,
        (e: unknown) => e,
      );
      await terminateWaiter(holder, `plan|${patientId}`);
      const err = await failed;
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

/**
 * Waits until a backend waits for the advisory lock `key` (held by `holder`), terminates that backend and waits until
 * its locks are gone (until then it still shows as waiting, and a second call would find it again, not the next one).
 */
async function terminateWaiter(holder: pg.Client, key: string): Promise<void> {
  const pause = () => new Promise((r) => setTimeout(r, 25));
  for (let i = 0; i < 400; i++) {
    const rows = await holder.query<{ pid: number }>(
      `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
         AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)`,
      [key],
    );
    const pid = rows.rows[0]?.pid;
    if (pid !== undefined) {
      await holder.query('SELECT pg_terminate_backend($1)', [pid]);
      // pg_locks is read live (pg_stat_activity would be a snapshot kept for the holder's whole transaction)
      while ((await holder.query('SELECT 1 FROM pg_locks WHERE pid = $1', [pid])).rows.length > 0) await pause();
      return;
    }
    await pause();
  }
  throw new Error(`nobody waited for ${key}`);
}

/**
 * Nothing lost when the store fails in the middle of an import, with the lanes in the process and in a worker. A
 * batch whose connection is lost is run again row by row, so one lost connection costs nothing; when the retry
 * fails too, the POST fails with a server error and the stored file goes back to the inbox worker, which imports it.
 */
const modes: [string, string][] = [
  ['in the process', '0'],
  ['in a worker', '1'],
];
(PG_URL ? describe.each(modes) : describe.skip.each(modes))('a connection lost during an import, lanes %s', (_mode, workers) => {
  const suite = useGateway(() => postgresBackend(PG_URL!), { IMPORT_WORKERS: workers });
  const mapping = socialMapping('tartu-linn')!;
  const file = EXAMPLE;
  const first = checkRecord(mapping, [...readRecords(mapping, file)][0], '2026-11-20').decision!;
  const lockKey = `plan|${contributionFor(mapping, first, 'x').patient.id!}`;

  /** posts the file while the first person's plan is locked; `losses` connections waiting for it are cut */
  async function postLosing(losses: number): Promise<Response> {
    const holder = new pg.Client({ connectionString: PG_URL });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [lockKey]);
      const posted = fetch(`${suite.url}/social-care/tartu-linn`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: new Uint8Array(file) });
      for (let n = 0; n < losses; n++) await terminateWaiter(holder, lockKey);
      await holder.query('ROLLBACK');
      return await posted;
    } finally {
      await holder.end();
    }
  }

  test('lost again on the retry: the POST fails, the file is imported again from the inbox, every row lands', async () => {
    const res = await postLosing(2);
    expect(res.status).toBe(500);
    expect(((await res.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
    // the inbox worker (polling every second) imports the stored file again
    let entry: { id: string; status: string } | undefined;
    for (let i = 0; i < 100 && entry?.status !== 'processed'; i++) {
      const list = (await (await fetch(`${suite.url}/admin/messages?channel=social-care`)).json()) as { entries: { id: string; status: string }[] };
      expect(list.entries).toHaveLength(1);
      entry = list.entries[0];
      if (entry.status !== 'processed') await new Promise((r) => setTimeout(r, 100));
    }
    expect(entry?.status).toBe('processed');
    const one = (await (await fetch(`${suite.url}/admin/messages/${entry!.id}`)).json()) as { attempts: number; outcome: { rows: unknown } };
    expect(one.attempts).toBe(2);
    expect(one.outcome.rows).toMatchObject({ total: 4, accepted: 4, rejected: 0 });
    const plans = (await (await fetch(`${suite.base}/CarePlan?_summary=count`)).json()) as { total: number };
    expect(plans.total).toBe(4);
  });

  test('lost once: the batch is run again row by row and the POST answers with the full report', async () => {
    const res = await postLosing(1);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { rows: unknown }).rows).toEqual({ total: 4, accepted: 4, rejected: 0, changed: 0 });
  });
});

/** The built gateway (`node dist/src/main.js`) as deployed: its workers run the built worker script. */
(PG_URL ? describe : describe.skip)('the built gateway with IMPORT_WORKERS', () => {
  test('starts its workers, imports through them, and stops cleanly on SIGTERM', async () => {
    const backend = postgresBackend(PG_URL!);
    await backend.prepare();
    try {
      const gw = await spawnGateway({ ...backend.env(), IMPORT_WORKERS: '2' });
      try {
        expect(gw.logs.some((l) => l.includes('"import workers started"') && l.includes('"workers":2'))).toBe(true);
        const file = EXAMPLE;
        const res = await fetch(`${gw.url}/social-care/tartu-linn`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: new Uint8Array(file) });
        expect(res.status).toBe(200);
        expect(((await res.json()) as { rows: unknown }).rows).toEqual({ total: 4, accepted: 4, rejected: 0, changed: 4 });
      } finally {
        expect(await killed(gw.proc, 'SIGTERM')).toBe(0);
      }
    } finally {
      await backend.cleanup();
    }
  });
});
