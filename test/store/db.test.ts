/**
 * The PostgreSQL connection layer when the server drops a connection in the middle of a transaction (a backend
 * terminated, a restart): the transaction fails with the error, the process lives on, and the pool lends a new
 * connection for the next one instead of the dead one.
 */
import crypto from 'node:crypto';
import pg from 'pg';
import { openDb, type Db } from '../../src/store/db.js';
import { PG_URL } from '../helpers/backends.js';

(PG_URL ? describe : describe.skip)('PostgreSQL connection lost inside a transaction', () => {
  const schema = `cg_test_${crypto.randomBytes(5).toString('hex')}`;
  let db: Db;
  let admin: pg.Client;
  beforeAll(async () => {
    db = await openDb({ databaseUrl: PG_URL, schema, poolSize: 1 });
    admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
  });
  afterAll(async () => {
    await db?.close();
    await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin?.end();
  });

  test('fails that transaction; the next one runs on a new connection', async () => {
    const pids: number[] = [];
    const failed = await db
      .transaction(async (tx) => {
        const [{ pid }] = await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        pids.push(pid);
        await admin.query('SELECT pg_terminate_backend($1)', [pid]);
        await new Promise((r) => setTimeout(r, 100)); // the client hears of it
        await tx.query('SELECT 1');
      })
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(failed?.message).toMatch(/terminat|Connection/i);
    // one connection in the pool: it must be a new one, not the dead one lent again
    const [{ pid }] = await db.transaction((tx) => tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'));
    expect(pid).not.toBe(pids[0]);
    expect(await db.query<{ n: number }>('SELECT 1 AS n')).toEqual([{ n: 1 }]);
  });
});
