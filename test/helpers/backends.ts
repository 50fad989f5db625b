/**
 * The store backends every conformance suite runs against: PGlite always; PostgreSQL when TEST_DATABASE_URL
 * is set (.ci/run sets it, so CI never skips). Each suite gets its own PostgreSQL schema, dropped afterwards.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { openStore, type Store } from '../../src/store/index.js';
import { openDb, type Db } from '../../src/store/db.js';
import { writeChecks } from '../../src/write-checks.js';

export const PG_URL = process.env.TEST_DATABASE_URL;

/** Test stores hold little: a small page cache opens the embedded database ~0.35 s sooner (PGLITE_SHARED_BUFFERS). */
export const TEST_SHARED_BUFFERS = '16MB';

export interface Backend {
  name: 'pglite' | 'postgres';
  /** opens a fresh, empty store; call cleanup() when done */
  open(): Promise<Store>;
  /** makes a fresh, empty store without opening it, for a gateway to open (cheaper than open() and close()) */
  prepare(): Promise<void>;
  /** opens another store on the same data as the last open() (a second instance, or a restart) */
  reopen(): Promise<Store>;
  cleanup(): Promise<void>;
  /** env for a gateway child process using the same data */
  env(): Record<string, string>;
}

export function tempDir(prefix = 'cg-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * Templates of embedded stores, made once per machine and copied for each test store: a fresh PGlite directory
 * takes ~5 s to initialise and migrate, a copy ~0.3 s. A template's name carries a digest of what makes it (the
 * schema and migrations, the installed packages), so a change to them makes a new one; it is made in a directory of
 * its own and renamed into place, so two test workers never see a half-made template.
 */
const templates = new Map<string, Promise<string>>();
function pgliteTemplate(kind: 'migrated' | 'blank'): Promise<string> {
  let t = templates.get(kind);
  if (!t) {
    t = (async () => {
      const hash = crypto.createHash('sha256').update(kind).update(fs.readFileSync(path.resolve('package-lock.json')));
      if (kind === 'migrated') hash.update(fs.readFileSync(path.resolve('src/store/schema.ts')));
      const final = path.join(os.tmpdir(), `cg-pglite-template-${kind}-${hash.digest('hex').slice(0, 16)}`);
      if (fs.existsSync(path.join(final, '.complete'))) return final;
      const making = tempDir('cg-pglite-making-');
      await (kind === 'migrated' ? openStore({ dataDir: making, pgliteSharedBuffers: TEST_SHARED_BUFFERS, ...writeChecks }) : openDb({ dataDir: making, pgliteSharedBuffers: TEST_SHARED_BUFFERS })).then((x) => x.close());
      fs.writeFileSync(path.join(making, '.complete'), '');
      try {
        fs.renameSync(making, final);
      } catch {
        fs.rmSync(making, { recursive: true, force: true }); // another worker made it first
      }
      return final;
    })();
    templates.set(kind, t);
  }
  return t;
}

async function copyOf(kind: 'migrated' | 'blank'): Promise<string> {
  const dir = tempDir('cg-pglite-');
  fs.cpSync(await pgliteTemplate(kind), dir, { recursive: true });
  fs.rmSync(path.join(dir, '.complete'), { force: true });
  return dir;
}

/** A new embedded database with no schema at all (for migration tests), and how to remove it. */
export async function blankPglite(): Promise<{ db: Db; drop: () => Promise<void> }> {
  const dir = await copyOf('blank');
  return { db: await openDb({ dataDir: dir, pgliteSharedBuffers: TEST_SHARED_BUFFERS }), drop: async () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export function pgliteBackend(): Backend {
  let dir = '';
  return {
    name: 'pglite',
    async open() {
      dir = await copyOf('migrated');
      return openStore({ dataDir: dir, pgliteSharedBuffers: TEST_SHARED_BUFFERS, ...writeChecks });
    },
    async prepare() {
      dir = await copyOf('migrated');
    },
    reopen: () => openStore({ dataDir: dir, pgliteSharedBuffers: TEST_SHARED_BUFFERS, ...writeChecks }),
    async cleanup() {
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
    env: () => ({ DATA_DIR: dir, PGLITE_SHARED_BUFFERS: TEST_SHARED_BUFFERS }),
  };
}

export function postgresBackend(url: string): Backend {
  const schema = `cg_test_${crypto.randomBytes(5).toString('hex')}`;
  return {
    name: 'postgres',
    open: () => openStore({ databaseUrl: url, schema, ...writeChecks }),
    prepare: () => openStore({ databaseUrl: url, schema, ...writeChecks }).then((s) => s.close()),
    reopen: () => openStore({ databaseUrl: url, schema, ...writeChecks }),
    async cleanup() {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    },
    env: () => {
      const u = new URL(url);
      u.searchParams.set('options', `-c search_path=${schema}`);
      return { DATABASE_URL: u.toString() };
    },
  };
}

/** Backend factories for describe.each; PostgreSQL only when TEST_DATABASE_URL is set. */
export function backends(): [string, () => Backend][] {
  const list: [string, () => Backend][] = [['pglite', pgliteBackend]];
  if (PG_URL) list.push(['postgres', () => postgresBackend(PG_URL)]);
  return list;
}

/**
 * Opens a fresh store on a backend for the enclosing describe block, and closes and removes it afterwards.
 * Read `store` and `backend` inside tests and hooks (they are set in beforeAll).
 */
export function useStore(makeBackend: () => Backend): { store: Store; backend: Backend } {
  const ctx = {} as { store: Store; backend: Backend };
  beforeAll(async () => {
    ctx.backend = makeBackend();
    ctx.store = await ctx.backend.open();
  });
  afterAll(async () => {
    await ctx.store.close();
    await ctx.backend.cleanup();
  });
  return ctx;
}
