/**
 * The SQL connection both backends provide: PGlite (embedded, in DATA_DIR) and PostgreSQL (DATABASE_URL).
 *
 * Everything above this file (repository, search, inbox) speaks only `Queryable` and `Db`, with PostgreSQL
 * SQL and `$1` parameters — the same schema and migrations run on both. Only this file knows the drivers.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { OutcomeError } from '../fhir/outcome.js';

export type Row = Record<string, unknown>;

export interface Queryable {
  query<T extends Row = Row>(sql: string, params?: unknown[]): Promise<T[]>;
}

export interface Db extends Queryable {
  readonly kind: 'pglite' | 'postgres';
  /** Runs fn in one transaction: all its writes commit together or none do. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * Takes a session advisory lock on `key` on a connection of its own and keeps it until the returned function is
   * called or the process dies (PostgreSQL drops a session's locks when its connection ends): other instances can
   * tell this one is alive by failing to take the lock. A lost connection is reopened and the lock taken again.
   * On the embedded store (one process owns the directory) there is nobody to tell: nothing is held.
   */
  holdLock(key: string): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** postgres://… — PostgreSQL; absent → PGlite in dataDir */
  databaseUrl?: string;
  /** PGlite directory; `memory://` for a throwaway in-memory store */
  dataDir?: string;
  /** PostgreSQL schema to use (tests isolate themselves this way); created when missing */
  schema?: string;
  poolSize?: number;
  /** the embedded store's shared_buffers (PGLITE_SHARED_BUFFERS); 32MB when absent (config.ts) */
  pgliteSharedBuffers?: string;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

export async function openDb(opts: OpenOptions): Promise<Db> {
  return opts.databaseUrl ? openPostgres(opts.databaseUrl, opts.schema, opts.poolSize ?? 10) : openPglite(opts.dataDir ?? './data', opts.pgliteSharedBuffers);
}

/** The PostgreSQL client, loaded when a PostgreSQL store is opened (the embedded store's start does without it). */
type PgDriver = typeof pg;
const loadPg = async (): Promise<PgDriver> => (await import('pg')).default;

async function openPostgres(url: string, schema: string | undefined, max: number): Promise<Db> {
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) throw new Error(`bad schema name ${schema}`);
  const pg = await loadPg();
  if (schema) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    } finally {
      await c.end();
    }
  }
  // short OLTP statements: JIT compilation (30+ ms for a search with several EXISTS) costs more than it saves
  const u = new URL(url);
  const options = [u.searchParams.get('options'), schema ? `-c search_path=${schema}` : '', '-c jit=off'].filter(Boolean).join(' ');
  u.searchParams.delete('options');
  const pool = new pg.Pool({ connectionString: u.toString(), max, options });
  pool.on('error', () => undefined); // idle client errors surface on the next query
  const statements = new PreparedStatements();
  const q = async <T extends Row>(client: pg.Pool | pg.PoolClient, sql: string, params?: unknown[]): Promise<T[]> =>
    (await client.query({ text: sql, values: params as unknown[], name: statements.nameFor(sql, params) })).rows as T[];
  return {
    kind: 'postgres',
    query: (sql, params) => q(pool, sql, params),
    async transaction(fn) {
      const client = await pool.connect();
      // A connection lost while checked out (the backend terminated, the server restarted) makes the client emit
      // 'error' besides failing the statement in flight; unheard, that event would end the process. It is heard
      // here, and the dead client is released with its error so the pool drops it instead of lending it again.
      let lost: Error | undefined;
      const onError = (err: Error): void => {
        lost = err;
      };
      client.on('error', onError);
      try {
        await client.query('BEGIN');
        const result = await fn({ query: (sql, params) => q(client, sql, params) });
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch((e: Error) => {
          lost ??= e;
        });
        throw err;
      } finally {
        client.off('error', onError);
        client.release(lost);
      }
    },
    holdLock: (key) => holdLock(pg, u.toString(), key),
    close: () => pool.end(),
  };
}

async function holdLock(driver: PgDriver, url: string, key: string): Promise<() => Promise<void>> {
  let client: pg.Client | undefined;
  let released = false;
  let retry: NodeJS.Timeout | undefined;
  const take = async (): Promise<void> => {
    const c = new driver.Client({ connectionString: url });
    c.on('error', () => undefined); // the 'end' below reconnects
    try {
      await c.connect();
      await c.query(`SELECT pg_advisory_lock(hashtextextended($1, 0))`, [key]);
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
    if (released) return void (await c.end().catch(() => undefined));
    client = c;
    c.once('end', () => {
      client = undefined;
      if (!released) again();
    });
  };
  const again = (): void => {
    retry = setTimeout(() => take().catch(again), 1000);
    retry.unref();
  };
  await take();
  return async () => {
    released = true;
    clearTimeout(retry);
    await client?.end().catch(() => undefined);
  };
}

async function openPglite(dataDir: string, sharedBuffers = '32MB'): Promise<Db> {
  const pglite = await import('@electric-sql/pglite');
  const inMemory = dataDir.startsWith('memory://');
  if (!inMemory) fs.mkdirSync(path.join(dataDir), { recursive: true });
  // every call of a named statement planned for its values (namedStatements says why)
  const startParams = [...pglite.PGlite.defaultStartParams, '-c', `shared_buffers=${sharedBuffers}`, '-c', 'plan_cache_mode=force_custom_plan'];
  const db = new pglite.PGlite(inMemory ? undefined : path.join(dataDir, 'pgdata'), { startParams });
  await db.waitReady;
  const named = namedStatements(db, pglite);
  let closed = false;
  return {
    kind: 'pglite',
    async query<T extends Row>(sql: string, params?: unknown[]) {
      if (closed) throw new OutcomeError('busy', 'store is closed');
      return named.query<T>(sql, params, false) ?? (await db.query<T>(sql, params)).rows;
    },
    transaction(fn) {
      if (closed) return Promise.reject(new OutcomeError('busy', 'store is closed'));
      // PGlite has one connection; its transaction() holds it exclusively, so transactions run one at a time.
      return db.transaction((tx) => fn({ query: async <T extends Row>(sql: string, params?: unknown[]) => named.query<T>(sql, params, true) ?? (await tx.query<T>(sql, params)).rows }));
    },
    holdLock: async () => async () => undefined,
    async close() {
      if (closed) return;
      closed = true;
      if (!inMemory) await db.query('CHECKPOINT').catch(() => undefined);
      await db.close();
      if (!inMemory) fsyncTree(path.join(dataDir, 'pgdata'));
    },
  };
}

type PgliteModule = typeof import('@electric-sql/pglite');

/**
 * Named statements on the embedded store too (PreparedStatements, below): PGlite's query() parses, analyses and plans
 * every call anew. A statement with parameters is parsed once under its name; each call then binds, describes and
 * executes it — the extended-protocol messages query() itself sends, under the same locks (a transaction's statements
 * under the query lock it holds between them, any other also under the transaction lock).
 * Each call is still planned for its values (plan_cache_mode=force_custom_plan, openPglite): the embedded database
 * runs no autovacuum, so nothing would ever invalidate a generic plan made while the tables were small — with them,
 * MLLP ingestion fell from 56 to 13 msg/s as the tables grew. Returns undefined for a statement to run unnamed.
 */
function namedStatements(db: InstanceType<PgliteModule['PGlite']>, pglite: PgliteModule) {
  const statements = new PreparedStatements();
  const paramTypes = new Map<string, number[]>();
  const parsed = new Set<string>();
  const { serialize } = pglite.protocol;
  const send = (message: Uint8Array) => db.execProtocolStream(message, { syncToFs: false });
  const run = async <T extends Row>(name: string, sql: string, params: unknown[]): Promise<T[]> => {
    const messages: Awaited<ReturnType<typeof send>> = [];
    try {
      let types = paramTypes.get(name);
      if (!types) {
        if (!parsed.has(name)) {
          await send(serialize.parse({ name, text: sql }));
          parsed.add(name);
        }
        types = pglite.parse.parseDescribeStatementResults(await send(serialize.describe({ type: 'S', name })));
        paramTypes.set(name, types);
      }
      const values = params.map((v, i) => (v === null || v === undefined ? null : (db.serializers[types![i]] ?? String)(v)));
      messages.push(...(await send(serialize.bind({ statement: name, values: values as string[] }))));
      messages.push(...(await send(serialize.describe({ type: 'P' }))));
      messages.push(...(await send(serialize.execute({}))));
    } catch (e) {
      if (e instanceof Error) Object.assign(e, { query: sql });
      throw e;
    } finally {
      messages.push(...(await send(serialize.sync())));
    }
    return (pglite.parse.parseResults(messages, db.parsers)[0]?.rows ?? []) as T[];
  };
  return {
    query<T extends Row>(sql: string, params: unknown[] | undefined, inTransaction: boolean): Promise<T[]> | undefined {
      const name = statements.nameFor(sql, params);
      if (!name) return undefined;
      const exclusive = () => db._runExclusiveQuery(() => run<T>(name, sql, params!));
      return inTransaction ? exclusive() : db._runExclusiveTransaction(exclusive);
    },
  };
}

/**
 * Server-side prepared statements, as JDBC drivers (and so HAPI FHIR) use them: a statement with parameters runs
 * under a name derived from its text, so each connection parses it once and PostgreSQL may keep a generic plan
 * after five executions instead of planning every call. For the GP pull, planning took twice as long as executing
 * (0.57 ms against 0.26 ms); named, the statement costs 0.34 ms a call instead of 1.4 ms (bench/api.ts).
 * Search SQL keeps values in parameters and only the query's shape in its text, so few texts recur; still, a
 * client inventing new shapes must not grow every backend's memory without end: past `max` distinct texts (500) in this
 * process, new ones run unnamed (as before), and the named ones stay.
 */
export class PreparedStatements {
  private readonly names = new Map<string, string>();

  constructor(private readonly max = 500) {}

  /** The statement name for sql, or undefined to run it unnamed (no parameters, or the cap reached). */
  nameFor(sql: string, params?: unknown[]): string | undefined {
    if (!params || params.length === 0) return undefined; // BEGIN, COMMIT, DDL: nothing to reuse
    let name = this.names.get(sql);
    if (name === undefined) {
      if (this.names.size >= this.max) return undefined;
      name = 'cg_' + crypto.createHash('sha1').update(sql).digest('base64url');
      this.names.set(sql, name);
    }
    return name;
  }

  get size(): number {
    return this.names.size;
  }
}

/** fsync every file and directory below dir: PGlite never syncs, so a clean close makes its files durable here. */
export function fsyncTree(dir: string): void {
  if (!fs.existsSync(dir)) return;
  const walk = (p: string): void => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
    const fd = fs.openSync(p, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  };
  walk(dir);
}
