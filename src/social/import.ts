/**
 * Importing a municipal export that is already stored in the inbox: rows are read one at a time, each checked
 * on its own, and the good ones go into the shared care plan in transactions of BATCH rows. A row the store
 * refuses (e.g. a state rule) is retried alone so the rest of its batch still lands. Re-importing the same file
 * writes nothing (deterministic ids, unchanged content makes no version); a changed row makes new versions with
 * Provenance naming the file (inbox entry) and row.
 */
import os from 'node:os';
import { OutcomeError, toOutcomeError } from '../fhir/outcome.js';
import type { Store } from '../store/index.js';
import type { Repository } from '../store/repository.js';
import { assemble, assembleMany } from '../careplan/assemble.js';
import { inUnitOfWork } from '../store/unit-of-work.js';
import { checkRecord, contributionFor, type Decision, type RowError } from './convert.js';
import type { ImportWorkers, RowOutcome } from './workers.js';
import { readRecords } from './records.js';
import { socialMapping, type SocialMapping } from './mapping.js';
import type { InboxEntry } from '../store/inbox.js';

export interface ImportReport {
  resourceType: 'SocialCareImportReport';
  source: string;
  /** the inbox entry that holds the file (GET /admin/messages/{id}) */
  inboxId: string;
  /** processed: at least one row accepted (or the file has none); rejected: nothing accepted */
  status: 'processed' | 'rejected';
  rows: { total: number; accepted: number; rejected: number; changed: number; duplicates?: number };
  /** every rejected row with its number, where it is in the file, the field, the column and the reason */
  rejected: RowError[];
  /** rows that repeat an earlier row of the file exactly: imported once, listed here */
  duplicates?: { row: number; at: string; duplicateOf: number; reason: string }[];
  /** a file-level problem (bad header, not CSV/JSON): no row was read */
  error?: string;
}

export const BATCH = 200;
/**
 * Parallel transactions on PostgreSQL: one per core, at least two (one lane's rows are assembled here while the
 * other's are written). More lanes than that only made the database's backends compete (10,000–20,000-row imports
 * on 2 cores: 4 lanes ~1,640 rows/s, 2 lanes ~1,750). At most four: a lane's transaction holds ~5 advisory locks
 * per row until it commits (the person's plan, every resource written), ~1,000 for a batch, and PostgreSQL's lock
 * table holds 64 per connection (6,400 with the default 100): past it every batch fails with "out of shared
 * memory" and is redone row by row (2 lanes of 1,000-row batches ran 3× slower).
 */
export const LANES = Math.max(2, Math.min(4, os.availableParallelism()));

function laneOf(isikukood: string, n: number): number {
  let h = 0;
  for (let i = 0; i < isikukood.length; i++) h = (h * 31 + isikukood.charCodeAt(i)) | 0;
  return Math.abs(h) % n;
}
/** a report lists at most this many rejected rows (the count is always exact) */
const MAX_LISTED = 10_000;

export async function importStored(
  store: Store,
  mapping: SocialMapping,
  inboxId: string,
  bytes: Buffer,
  opts: { workers?: ImportWorkers } = {},
): Promise<ImportReport> {
  const report: ImportReport = {
    resourceType: 'SocialCareImportReport',
    source: mapping.source,
    inboxId,
    status: 'processed',
    rows: { total: 0, accepted: 0, rejected: 0, changed: 0 },
    rejected: [],
  };
  const reject = (e: RowError): void => {
    report.rows.rejected++;
    if (report.rejected.length < MAX_LISTED) report.rejected.push(e);
  };
  const today = new Date().toISOString().slice(0, 10);
  // Rows go to lanes by person: one person's rows are always in the same lane, in file order, so lanes never wait
  // on each other's per-person locks. PostgreSQL runs the lanes' transactions side by side on the pool; the
  // embedded store has one connection, so one lane. Memory: at most LANES × BATCH rows in flight.
  // With import workers (IMPORT_WORKERS) each lane is one worker thread, so assembling uses more than one core.
  const count = opts.workers ? opts.workers.size : store.db.kind === 'postgres' ? LANES : 1;
  const lanes = Array.from({ length: count }, (_, n) => ({ n, batch: [] as Decision[], busy: Promise.resolve() }));
  const commit = async (lane: number, rows: Decision[]): Promise<void> => {
    const outcomes = opts.workers ? await opts.workers.run(lane, { source: mapping.source, inboxId, rows }) : await commitRows(store.repo, mapping, rows, inboxId);
    outcomes.forEach((o, k) => {
      if ('rejected' in o) return reject({ row: rows[k].row, at: rows[k].at, field: 'row', reason: o.rejected });
      report.rows.accepted++;
      if (o.changed) report.rows.changed++;
    });
  };
  const flush = async (lane: (typeof lanes)[number]): Promise<void> => {
    if (lane.batch.length === 0) return;
    const rows = lane.batch;
    lane.batch = [];
    await lane.busy; // this lane's previous batch first: a person's rows land in file order
    if (failure) throw failure;
    lane.busy = commit(lane.n, rows).catch((e: unknown) => {
      failure ??= e;
    });
  };
  let failure: unknown;

  // an exact duplicate of an earlier row of this file (the same values in every field) is imported once; a row
  // with the same decision but other values is a change within the file, and the later row wins (file order)
  const seen = new Map<string, number>();
  try {
    for (const raw of readRecords(mapping, bytes)) {
      report.rows.total++;
      const { decision, errors } = checkRecord(mapping, raw, today);
      if (!decision) {
        report.rows.rejected++;
        for (const e of errors) if (report.rejected.length < MAX_LISTED) report.rejected.push(e);
        continue;
      }
      const fingerprint = JSON.stringify([decision.decisionId, Object.entries(decision.v).sort()]);
      const first = seen.get(fingerprint);
      if (first !== undefined) {
        report.rows.duplicates = (report.rows.duplicates ?? 0) + 1;
        report.duplicates ??= [];
        if (report.duplicates.length < MAX_LISTED) report.duplicates.push({ row: decision.row, at: decision.at, duplicateOf: first, reason: `duplicate of row ${first}: imported once` });
        continue;
      }
      if (seen.size < 1_000_000) seen.set(fingerprint, decision.row);
      const lane = lanes[laneOf(decision.isikukood, lanes.length)];
      lane.batch.push(decision);
      if (lane.batch.length >= BATCH) await flush(lane);
    }
    for (const lane of lanes) await flush(lane);
    await Promise.all(lanes.map((l) => l.busy));
    if (failure) throw failure;
  } catch (err) {
    await Promise.all(lanes.map((l) => l.busy));
    const e = toOutcomeError(err);
    if (e.category === 'fault' || e.category === 'busy') throw err;
    report.error = e.message;
    report.status = 'rejected';
    await store.inbox.finish(inboxId, { status: 'rejected', reason: e.message, outcome: report });
    return report;
  }
  if (report.rows.total > 0 && report.rows.accepted === 0) report.status = 'rejected';
  await store.inbox.finish(inboxId, {
    status: report.status,
    reason: report.rows.rejected ? `${report.rows.rejected} of ${report.rows.total} rows rejected` : undefined,
    outcome: report,
  });
  return report;
}

/** What became of one row of a batch: accepted (and whether it wrote anything), or rejected with the reason. */

/**
 * Commits one lane's batch: one unit of work (every person's plan read ahead in one statement, all writes in one
 * batch); a row whose content the store refuses (a state rule, validation) is undone alone and reported. When the
 * batch as a whole fails (a concurrent change, a deadlock on a shared resource) each row is run alone. Errors of
 * the store itself ('fault', 'busy') are thrown: the file is not finished and can be processed again.
 */
export async function commitRows(repo: Repository, mapping: SocialMapping, rows: Decision[], inboxId: string): Promise<RowOutcome[]> {
  const refused = (err: unknown): RowOutcome => {
    const e = toOutcomeError(err);
    if (e.category === 'fault' || e.category === 'busy') throw err;
    return { rejected: e.message };
  };
  try {
    const results = await inUnitOfWork(repo, (w) => assembleMany(w, rows.map((d) => contributionFor(mapping, d, inboxId))));
    return results.map((r) => (r instanceof OutcomeError ? refused(r) : { changed: r.written.length > 0 }));
  } catch (err) {
    if (rows.length === 1) return [refused(err)];
    const out: RowOutcome[] = [];
    for (const d of rows) {
      try {
        const r = await repo.transaction((w) => assemble(w, contributionFor(mapping, d, inboxId)));
        out.push({ changed: r.written.length > 0 });
      } catch (e) {
        out.push(refused(e));
      }
    }
    return out;
  }
}

/** The worker's processor for stored social-care files (start-up recovery, $reprocess). */
export function socialProcessor(store: Store, workers?: ImportWorkers): (entry: InboxEntry & { payload: Buffer }) => Promise<void> {
  return async (entry) => {
    const mapping = entry.sender ? socialMapping(entry.sender) : undefined;
    if (!mapping) {
      const e = new OutcomeError('not-found', `no mapping for social-care source "${entry.sender}"`);
      await store.inbox.finish(entry.id, { status: 'rejected', reason: e.message, outcome: e.outcome });
      return;
    }
    await importStored(store, mapping, entry.id, entry.payload, { workers });
  };
}
