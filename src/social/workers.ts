/**
 * Import workers: the lanes of a municipal import run in worker threads, each with its own PostgreSQL connection,
 * so assembling and validating rows uses more than one core.
 *
 * In the process itself an import is bound by its one thread: ~0.7–1.2 ms of the gateway's CPU a row (assembly,
 * validation, search index, statement) against ~0.45–0.8 ms of PostgreSQL's, so more cores beside it would only
 * idle. With workers the process's own thread reads and checks the file and deals rows to the lanes by person
 * (one person's rows always in the same lane, in file order, as in process); each worker commits its lane's
 * batches exactly as the in-process lanes do (`commitRows`) and answers with each row's outcome. The report, the
 * inbox entry and everything else stay in the process.
 *
 * A lane works in turns (its thread assembles a batch, then PostgreSQL writes it), so one runs at about
 * 1 ÷ (gateway + database CPU a row) and each worker adds that much while there are cores for it. A worker costs a
 * thread, a database connection and its own heap, validators and definitions (~120 MB at rest, ~275 MB during an
 * import); on two cores, where the lanes in the process already keep both busy, it gained little, so by default
 * there are workers only from four cores on: IMPORT_WORKERS (README "Configuration") sets the number, 0 for none.
 * Only with PostgreSQL: the embedded store belongs to the process that opened it.
 */
import { Worker } from 'node:worker_threads';
import { OutcomeError, type Category } from '../fhir/outcome.js';
import type { Decision } from './convert.js';

/** What committing one row did: changed the plan or not, or the store refused it. */
export type RowOutcome = { changed: boolean } | { rejected: string };

/** What a worker needs to open the same store and read the same mappings as the process. */
export interface WorkerSetup {
  databaseUrl: string;
  schema?: string;
  socialMappingsDir?: string;
}

/** One lane's batch: the rows of one file (by its mapping's source and inbox entry). */
export interface ImportJob {
  source: string;
  inboxId: string;
  rows: Decision[];
}

export type WorkerRequest = { id: number; job: ImportJob } | { close: true };
export type WorkerReply = { id: number; outcomes: RowOutcome[] } | { id: number; error: { category?: Category; message: string } } | { ready: true };

/**
 * The worker's script. Under the test runner this module is the TypeScript source, which a worker thread cannot
 * run: it runs the built file (npm ci builds dist/).
 */
function scriptUrl(): URL {
  const here = import.meta.url;
  return here.endsWith('.ts') ? new URL('../../dist/src/social/import-worker.js', here) : new URL('./import-worker.js', here);
}

interface Pending {
  resolve: (o: RowOutcome[]) => void;
  reject: (e: Error) => void;
}

/** One worker thread; restarted for the next batch when it died (its batches in flight fail as faults). */
class Lane {
  private worker?: Worker;
  private ready?: Promise<void>;
  private readonly pending = new Map<number, Pending>();
  private next = 1;
  private closing = false;

  constructor(private readonly setup: WorkerSetup) {}

  start(): Promise<void> {
    if (this.worker && this.ready) return this.ready;
    const worker = new Worker(scriptUrl(), { workerData: this.setup });
    this.worker = worker;
    this.ready = new Promise<void>((resolve, reject) => {
      worker.on('message', (m: WorkerReply) => {
        if ('ready' in m) return resolve();
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if ('outcomes' in m) p.resolve(m.outcomes);
        else p.reject(m.error.category ? new OutcomeError(m.error.category, m.error.message) : new Error(`import worker: ${m.error.message}`));
      });
      const gone = (err: Error): void => {
        if (this.worker !== worker) return;
        this.worker = undefined;
        this.ready = undefined;
        reject(err);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      };
      worker.on('error', (err) => gone(new OutcomeError('fault', `import worker failed: ${err.message}`)));
      worker.on('exit', (code) =>
        gone(this.closing ? new OutcomeError('busy', 'the gateway is shutting down') : new OutcomeError('fault', `import worker exited (code ${code})`)),
      );
    });
    return this.ready;
  }

  async run(job: ImportJob): Promise<RowOutcome[]> {
    await this.start();
    const id = this.next++;
    return new Promise<RowOutcome[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker!.postMessage({ id, job } satisfies WorkerRequest);
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.closing = true;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ close: true } satisfies WorkerRequest);
    // the worker closes its connection and ends; one that does not within 5 s is stopped
    const timer = setTimeout(() => void worker.terminate(), 5_000);
    await exited;
    clearTimeout(timer);
    this.worker = undefined;
  }
}

export class ImportWorkers {
  private readonly lanes: Lane[];

  private constructor(n: number, setup: WorkerSetup) {
    this.lanes = Array.from({ length: n }, () => new Lane(setup));
  }

  /** Starts n workers and waits until each has opened the store (a worker that cannot start stops the start). */
  static async start(n: number, setup: WorkerSetup): Promise<ImportWorkers> {
    const w = new ImportWorkers(n, setup);
    try {
      await Promise.all(w.lanes.map((l) => l.start()));
    } catch (err) {
      await w.close();
      throw err;
    }
    return w;
  }

  get size(): number {
    return this.lanes.length;
  }

  /** Commits a batch in lane n's worker: each row's outcome, or the store's error ('fault', 'busy') thrown. */
  run(n: number, job: ImportJob): Promise<RowOutcome[]> {
    return this.lanes[n % this.lanes.length].run(job);
  }

  async close(): Promise<void> {
    await Promise.all(this.lanes.map((l) => l.close()));
  }
}
