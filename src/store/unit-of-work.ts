/**
 * A unit of work: a Writer that keeps what a transaction reads and writes in memory and sends the writes to the
 * database together, at `flush()`.
 *
 * Ingest turns one message (or one municipal row) into ~20 resource reads and writes. Done one statement at a time
 * that is ~25 round trips per message, and on this kind of machine a round trip costs far more than the work
 * (every socket write is a system call). A unit of work lets many messages share a handful of statements:
 *
 *   lock every person's plan (1) → read everything the batch will need (1) → assemble each contribution in memory
 *   → lock what changed (1) → check nobody changed it meanwhile (1) → write it all (1)
 *
 * Concurrency is optimistic: reads take no locks; at flush the changed resources are locked in sorted order and
 * their versions compared with the versions read. A difference throws a 'busy' OutcomeError and the transaction
 * rolls back (the caller runs the work again, e.g. one message at a time). Several versions of one resource in
 * a unit (two messages for one person) are all kept in history, each with its own version id.
 *
 * Anything that needs the database to see the writes (search, delete, raw reference lookups, If-Match) flushes
 * first, so a unit of work behaves exactly like a Writer, only with fewer round trips.
 */
import type { Resource } from '../fhir/types.js';
import { OutcomeError, notFound } from '../fhir/outcome.js';
import type { Queryable } from './db.js';
import { indexRows, noIndexRows } from './indexer.js';
import type { SearchRequest, SearchResult } from './search.js';
import { sameContent } from './content.js';
import { uniqueById, Writer, type BatchItem, type RepositoryOptions, type UpdateOptions, type WriteResult } from './writer.js';
import { type Repository } from './repository.js';

interface Known {
  version: number;
  deleted: boolean;
  /** the current content (absent for deletions) */
  resource?: Resource;
}

/** What a key looked like before the work since a mark touched it (undefined: it was not there). */
interface Saved {
  known: Known | null | undefined;
  base: number | null | undefined;
  pending: BatchItem[] | undefined;
}

/** A point `restore` can return the unit of work to (per message or row: a bad one is dropped, the rest kept). */
export interface Mark {
  saved: Map<string, Saved>;
  flushes: number;
}

const keyOf = (type: string, id: string): string => `${type}/${id}`;

export class UnitOfWork extends Writer {
  /** current state by `Type/id` as this unit sees it; null: no row */
  private readonly known = new Map<string, Known | null>();
  /** the version in the database when read (null: no row) — what flush verifies */
  private readonly base = new Map<string, number | null>();
  /** versions written since the last flush, oldest first */
  private readonly pending = new Map<string, BatchItem[]>();
  /**
   * What the database holds now, as far as this unit knows: the current version's JSON text (null: deleted or no
   * row) — text, so nothing done to the parsed copies can change it. Its index rows are the ones stored, so a flush
   * changes only the rows that differ.
   */
  private readonly stored = new Map<string, string | null>();
  private marks: Mark[] = [];
  private flushes = 0;

  constructor(tx: Queryable, opts: RepositoryOptions) {
    super(tx, opts);
  }

  /** Starts recording changes so `restore` can undo them. */
  mark(): Mark {
    const m: Mark = { saved: new Map(), flushes: this.flushes };
    this.marks.push(m);
    return m;
  }

  /** Forgets a mark (its changes stay). */
  release(m: Mark): void {
    this.marks = this.marks.filter((x) => x !== m);
  }

  /** Undoes everything since the mark; impossible (throws) when a flush happened since. */
  restore(m: Mark): void {
    if (m.flushes !== this.flushes) throw new OutcomeError('fault', 'a unit of work cannot be restored past a flush');
    for (const [k, s] of m.saved) {
      if (s.known === undefined) this.known.delete(k);
      else this.known.set(k, s.known);
      if (s.base === undefined) this.base.delete(k);
      else this.base.set(k, s.base);
      if (s.pending === undefined) this.pending.delete(k);
      else this.pending.set(k, s.pending);
    }
    this.release(m);
  }

  private touch(k: string): void {
    for (const m of this.marks) {
      if (m.saved.has(k)) continue;
      const p = this.pending.get(k);
      m.saved.set(k, { known: this.known.get(k), base: this.base.get(k), pending: p ? [...p] : undefined });
    }
  }

  /** Reads keys this unit has not seen yet, in one statement (deleted rows included, as versions). */
  async prefetch(keys: [string, string][]): Promise<void> {
    const missing = [...new Map(keys.filter(([t, id]) => !this.known.has(keyOf(t, id))).map((k) => [keyOf(k[0], k[1]), k])).values()];
    if (missing.length === 0) return;
    const rows = await this.tx.query<{ resource_type: string; id: string; version_id: number; deleted: boolean; content: string | null }>(
      `SELECT resource_type, id, version_id, deleted, content FROM resource
       WHERE (resource_type, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [missing.map((k) => k[0]), missing.map((k) => k[1])],
    );
    const found = new Map(rows.map((r) => [keyOf(r.resource_type, r.id), r]));
    for (const [t, id] of missing) {
      const k = keyOf(t, id);
      const r = found.get(k);
      this.touch(k);
      const version = r ? Number(r.version_id) : null;
      this.base.set(k, version);
      const text = r && !r.deleted && r.content ? r.content : null;
      this.known.set(k, r ? { version: version!, deleted: r.deleted, resource: text === null ? undefined : (JSON.parse(text) as Resource) } : null);
      this.stored.set(k, text);
    }
  }

  private current(type: string, id: string): Resource | undefined {
    const k = this.known.get(keyOf(type, id));
    return k && !k.deleted ? k.resource : undefined;
  }

  override async read<T extends Resource = Resource>(resourceType: string, id: string): Promise<T> {
    await this.prefetch([[resourceType, id]]);
    const k = this.known.get(keyOf(resourceType, id));
    if (!k) throw notFound(`${resourceType}/${id}`);
    if (k.deleted) throw new OutcomeError('gone', `${resourceType}/${id} has been deleted`);
    return k.resource as T;
  }

  override async readOptional<T extends Resource = Resource>(resourceType: string, id: string): Promise<T | undefined> {
    await this.prefetch([[resourceType, id]]);
    return this.current(resourceType, id) as T | undefined;
  }

  override async readMany(keys: [string, string][]): Promise<Map<string, Resource>> {
    await this.prefetch(keys);
    const out = new Map<string, Resource>();
    for (const [t, id] of keys) {
      const r = this.current(t, id);
      if (r) out.set(keyOf(t, id), r);
    }
    return out;
  }

  /** New resources wait for the flush like every other version here. */
  override insertNew(resources: Resource[]): Promise<WriteResult[]> {
    return this.updateMany(resources, { expectNew: true });
  }

  override async updateMany(resources: Resource[], opts: UpdateOptions = {}): Promise<WriteResult[]> {
    if (opts.ifMatch !== undefined) {
      // the version check needs the database's view: write what is pending, then update directly
      await this.flush();
      const results = await super.updateMany(resources, opts);
      for (const res of results) this.forget(res.resource.resourceType, res.resource.id!);
      return results;
    }
    const list = uniqueById(resources);
    if (opts.expectNew) {
      for (const r of list) {
        const k = keyOf(r.resourceType, r.id!);
        if (this.known.has(k)) continue;
        this.touch(k);
        this.known.set(k, null);
        this.base.set(k, null);
      }
    } else {
      await this.prefetch(list.map((r) => [r.resourceType, r.id!]));
    }
    const results = new Map<string, WriteResult>();
    // checks first, for every resource that changes (an unchanged one was checked when it was written), so a
    // refused list leaves nothing behind; then the versions
    const changed: Resource[] = [];
    for (const r of list) {
      const k = keyOf(r.resourceType, r.id!);
      const cur = this.known.get(k);
      if (cur && !cur.deleted && cur.resource) {
        if (sameContent(cur.resource, r)) {
          results.set(k, { resource: cur.resource, outcome: 'unchanged' });
          continue;
        }
        this.opts.validate?.(r);
        this.opts.checkUpdate?.(cur.resource, r);
      } else this.opts.validate?.(r);
      changed.push(r);
    }
    const lastUpdated = new Date().toISOString();
    for (const r of changed) {
      const k = keyOf(r.resourceType, r.id!);
      const cur = this.known.get(k);
      const versionId = cur ? cur.version + 1 : 1;
      const stored = { ...r, meta: { ...r.meta, versionId: String(versionId), lastUpdated } } as Resource;
      this.touch(k);
      this.known.set(k, { version: versionId, deleted: false, resource: stored });
      // the whole index now (a version is nearly always the one flushed; its patient key comes from the same rows)
      const index = indexRows(stored);
      this.pending.set(k, [...(this.pending.get(k) ?? []), { r: stored, content: JSON.stringify(stored), patientKey: index.patientKey, index }]);
      results.set(k, { resource: stored, outcome: cur && !cur.deleted ? 'updated' : 'created' });
    }
    return resources.map((r) => results.get(keyOf(r.resourceType, r.id!))!);
  }

  /** Drops what this unit knows of a resource (the next read goes to the database). */
  private forget(type: string, id: string): void {
    const k = keyOf(type, id);
    this.touch(k);
    this.known.delete(k);
    this.base.delete(k);
    this.stored.delete(k);
  }

  override async delete(resourceType: string, id: string): Promise<{ versionId?: string }> {
    await this.flush();
    const r = await super.delete(resourceType, id);
    this.forget(resourceType, id);
    return r;
  }

  override async search<T extends Resource = Resource>(req: SearchRequest): Promise<SearchResult<T>> {
    await this.flush();
    return super.search<T>(req);
  }

  override async referencesTo(targetType: string, targetId: string): Promise<[string, string][]> {
    await this.flush();
    return super.referencesTo(targetType, targetId);
  }

  /** How many resources are waiting to be written. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Writes everything pending: locks the changed resources (sorted), checks their versions are still the ones
   * read, and writes current rows, every version and the search index in one statement.
   */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const keys = [...this.pending.keys()].sort();
    await this.lockKeys(keys.map((k) => `res|${k.replace('/', '|')}`));
    const split = keys.map((k) => k.split('/') as [string, string]);
    const rows = await this.tx.query<{ resource_type: string; id: string; version_id: number }>(
      `SELECT resource_type, id, version_id FROM resource WHERE (resource_type, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [split.map((k) => k[0]), split.map((k) => k[1])],
    );
    const now = new Map(rows.map((r) => [keyOf(r.resource_type, r.id), Number(r.version_id)]));
    for (const k of keys) {
      if ((now.get(k) ?? null) !== (this.base.get(k) ?? null)) {
        throw new OutcomeError('busy', `${k} was changed by another writer meanwhile; the work is rolled back and can be run again`);
      }
    }
    const inserts: BatchItem[] = [];
    const updates: BatchItem[] = [];
    const versions: BatchItem[] = [];
    for (const k of keys) {
      const items = this.pending.get(k)!;
      versions.push(...items);
      const last = items[items.length - 1];
      if (this.base.get(k) === null) inserts.push(last);
      else {
        // the rows stored for the version read (none for a deleted one); unknown: all rows are rewritten
        const stored = this.stored.get(k);
        if (stored !== undefined) last.prior = stored !== null ? indexRows(JSON.parse(stored) as Resource) : noIndexRows(last.patientKey);
        updates.push(last);
      }
    }
    await this.writeBatch(inserts, updates, versions);
    for (const k of keys) {
      const items = this.pending.get(k)!;
      this.base.set(k, Number(items[items.length - 1].r.meta!.versionId));
      this.stored.set(k, items[items.length - 1].content);
    }
    this.pending.clear();
    this.flushes++;
  }
}

/** A failure that running the same work again can cure: another writer changed what was read, or a deadlock. */
function isTransient(err: unknown): boolean {
  if (err instanceof OutcomeError) return err.category === 'busy';
  return isDeadlock(err);
}

/**
 * Runs fn — one transaction, started inside it — again when PostgreSQL chose it as a deadlock victim or found a
 * serialisation failure, up to `attempts` times in all. Two writers that take the advisory locks of the same keys in
 * different rounds can deadlock; the victim's work was rolled back whole, so running it again is the remedy. fn must
 * start from its inputs each time (nothing kept from an attempt that failed).
 */
export function retryDeadlocks<T>(fn: () => Promise<T>, attempts = 4): Promise<T> {
  return runAgain(fn, isDeadlock, attempts, true);
}

/** fn, and again while it fails with an error `again` accepts, up to `attempts` runs; `pause`: a random short wait first. */
async function runAgain<T>(fn: () => Promise<T>, again: (err: unknown) => boolean, attempts: number, pause = false): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= attempts || !again(err)) throw err;
      if (pause) await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * attempt)); // not in step with the other
    }
  }
}

/** PostgreSQL's deadlock victim (40P01) or serialisation failure (40001): the work can simply run again. */
export function isDeadlock(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001';
}

/**
 * Runs fn in one transaction with a unit of work, flushed before the commit. When another writer changed a
 * resource the work read (or the database chose it as a deadlock victim), the transaction is rolled back and the
 * work run again from the start, up to `attempts` times in all: fn must only compute from its inputs.
 */
export function inUnitOfWork<T>(repo: Repository, fn: (w: UnitOfWork) => Promise<T>, attempts = 4): Promise<T> {
  return runAgain(
    () =>
      repo.db.transaction(async (tx) => {
        const w = new UnitOfWork(tx, repo.options);
        const result = await fn(w);
        await w.flush();
        return result;
      }),
    isTransient,
    attempts,
  );
}
