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
import { conformanceResources } from '../../src/fhir/profiles.js';

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

/**
 * Where test stores live: the memory-backed /dev/shm when the machine has one with room (2 GB free), else the
 * system's temp folder. A test store is thrown away after its suite; on disk, its copy and the fsync of every file
 * at close cost ~0.3 s each and compete with the other worker for the disk.
 */
export const STORE_ROOT = ((): string => {
  try {
    const st = fs.statfsSync('/dev/shm');
    fs.accessSync('/dev/shm', fs.constants.W_OK);
    return st.bavail * st.bsize >= 2 * 1024 ** 3 ? '/dev/shm' : os.tmpdir();
  } catch {
    return os.tmpdir();
  }
})();

export function tempDir(prefix = 'cg-'): string {
  return fs.mkdtempSync(path.join(STORE_ROOT, prefix));
}

/**
 * Templates of embedded stores, made once per machine and copied for each test store: a fresh PGlite directory
 * takes ~5 s to initialise and migrate, a copy ~0.3 s. `blank` has no schema, `migrated` the schema, `served` also
 * the project's conformance resources, which a gateway writes at its first start (~1 s; unchanged ones cost nothing).
 * A template's name carries a digest of what makes it (the installed packages, the store and FHIR code, the profiles),
 * so a change to them makes a new one; one worker makes it (the others wait on a lock) in a directory of its own,
 * renamed into place once complete.
 */
type TemplateKind = 'blank' | 'migrated' | 'served';
const templates = new Map<TemplateKind, Promise<string>>();

function digestOf(hash: crypto.Hash, p: string): void {
  if (!fs.existsSync(p)) return;
  if (!fs.statSync(p).isDirectory()) {
    hash.update(path.relative(process.cwd(), p)).update(fs.readFileSync(p));
    return;
  }
  for (const e of fs.readdirSync(p).sort()) digestOf(hash, path.join(p, e));
}

/** Each template starts from a copy of the one before it: one `initdb` per machine, not one per kind. */
const BEFORE: Record<TemplateKind, TemplateKind | undefined> = { blank: undefined, migrated: 'blank', served: 'migrated' };

function pgliteTemplate(kind: TemplateKind): Promise<string> {
  let t = templates.get(kind);
  if (!t) {
    t = (async () => {
      const hash = crypto.createHash('sha256').update(kind);
      for (const p of ['package-lock.json', ...(kind === 'blank' ? [] : ['src/store', 'src/fhir', 'profiles'])]) digestOf(hash, path.resolve(p));
      const final = path.join(STORE_ROOT, `cg-pglite-template-${kind}-${hash.digest('hex').slice(0, 16)}`);
      const complete = (): boolean => fs.existsSync(path.join(final, '.complete'));
      // one worker makes it while the others wait (a lock left by a killed run is taken over after two minutes)
      const lock = `${final}.lock`;
      for (;;) {
        if (complete()) return final;
        try {
          fs.mkdirSync(lock);
          break;
        } catch {
          const age = Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
          if (age > 120_000) fs.rmSync(lock, { recursive: true, force: true });
          else await new Promise((resolve) => setTimeout(resolve, 200));
        }
      }
      try {
        if (complete()) return final;
        const before = BEFORE[kind];
        const making = before ? await copyOf(before) : tempDir('cg-pglite-making-');
        if (kind === 'blank') await openDb({ dataDir: making, pgliteSharedBuffers: TEST_SHARED_BUFFERS }).then((x) => x.close());
        else {
          const store = await openStore({ dataDir: making, pgliteSharedBuffers: TEST_SHARED_BUFFERS, ...writeChecks });
          if (kind === 'served') await store.repo.transaction((w) => w.updateMany(conformanceResources()));
          await store.close();
        }
        fs.writeFileSync(path.join(making, '.complete'), '');
        fs.rmSync(final, { recursive: true, force: true }); // half of one a killed run left
        fs.renameSync(making, final);
        return final;
      } finally {
        fs.rmSync(lock, { recursive: true, force: true });
      }
    })();
    templates.set(kind, t);
  }
  return t;
}

async function copyOf(kind: TemplateKind): Promise<string> {
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
      dir = await copyOf('served');
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
