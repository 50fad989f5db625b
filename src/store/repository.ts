/**
 * The FHIR repository: each call its own transaction over a `Writer` (writer.ts); `transaction()` groups several
 * writes, `as(guard)` gives the repository on behalf of one caller (`CallerRepository`, the only way the FHIR API
 * reaches stored data). History and its cursors are here; search and writes are the Writer's.
 *
 * @see https://hl7.org/fhir/R4/http.html (read, vread, history, search)
 */
import type { Resource } from '../fhir/types.js';
import { OutcomeError, notFound } from '../fhir/outcome.js';
import { Writer, type RepositoryOptions, type WriteResult } from './writer.js';
import type { Db } from './db.js';
import type { SearchRequest, SearchResult } from './search.js';
import type { Guard } from './guard.js';
import { openCursor, sealCursor } from './cursors.js';

export interface HistoryEntry {
  resourceType: string;
  id: string;
  versionId: string;
  lastUpdated: string;
  deleted: boolean;
  /** absent for deletions */
  resource?: Resource;
  /** POST for the first version, DELETE for deletions, PUT otherwise */
  method: 'POST' | 'PUT' | 'DELETE';
}

/** The repository: each call is its own transaction; `transaction()` groups several writes into one. */
export class Repository {
  constructor(
    readonly db: Db,
    private readonly opts: RepositoryOptions = {},
  ) {}

  /** validation and update checks every write of this repository runs */
  get options(): RepositoryOptions {
    return this.opts;
  }

  transaction<T>(fn: (w: Writer) => Promise<T>): Promise<T> {
    return this.db.transaction((tx) => fn(new Writer(tx, this.opts)));
  }

  /** This repository as a caller sees it: every call passes the caller's policy (none: the open, loopback trial). */
  as(guard: Guard | undefined): CallerRepository {
    return new CallerRepository(this, guard);
  }

  create<T extends Resource>(resource: T, opts: { ifNoneExist?: string } = {}): Promise<WriteResult<T>> {
    return this.transaction((w) => w.create(resource, opts));
  }

  update<T extends Resource>(resource: T, opts: { ifMatch?: string } = {}): Promise<WriteResult<T>> {
    return this.transaction((w) => w.update(resource, opts));
  }

  delete(resourceType: string, id: string): Promise<{ versionId?: string }> {
    return this.transaction((w) => w.delete(resourceType, id));
  }

  read<T extends Resource = Resource>(resourceType: string, id: string): Promise<T> {
    return new Writer(this.db, this.opts).read<T>(resourceType, id);
  }

  /** The stored JSON text of the current version (served as is, without re-serialising). */
  async readRaw(resourceType: string, id: string): Promise<{ content: string; versionId: string; lastUpdated: string }> {
    const rows = await this.db.query<{ content: string; deleted: boolean; version_id: number; last_updated: Date }>(
      `SELECT content, deleted, version_id, last_updated FROM resource WHERE resource_type = $1 AND id = $2`,
      [resourceType, id],
    );
    if (rows.length === 0) throw notFound(`${resourceType}/${id}`);
    if (rows[0].deleted) throw new OutcomeError('gone', `${resourceType}/${id} has been deleted`);
    return { content: rows[0].content, versionId: String(rows[0].version_id), lastUpdated: new Date(rows[0].last_updated).toISOString() };
  }

  async vread<T extends Resource = Resource>(resourceType: string, id: string, versionId: string): Promise<T> {
    if (!/^\d{1,9}$/.test(versionId)) throw notFound(`${resourceType}/${id}/_history/${versionId}`);
    const rows = await this.db.query<{ content: string | null; deleted: boolean }>(
      `SELECT content, deleted FROM resource_version WHERE resource_type = $1 AND id = $2 AND version_id = $3`,
      [resourceType, id, Number(versionId)],
    );
    if (rows.length === 0) throw notFound(`${resourceType}/${id}/_history/${versionId}`);
    if (rows[0].deleted || rows[0].content === null) throw new OutcomeError('gone', `${resourceType}/${id} version ${versionId} is a deletion`);
    return JSON.parse(rows[0].content) as T;
  }

  /**
   * history, newest first: instance (type + id), type (type only) or system (neither).
   * `since` keeps versions written at or after an instant; `before` pages back in time. Pages continue from an
   * opaque `cursor` (the last entry's time, type, id and version), so versions written in one batch with one
   * timestamp are neither skipped nor repeated, however many there are.
   */
  async history(opts: { resourceType?: string; id?: string; since?: string; before?: string; count?: number; cursor?: string } = {}): Promise<HistoryEntry[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (opts.resourceType) where.push(`resource_type = $${params.push(opts.resourceType)}`);
    if (opts.id) where.push(`id = $${params.push(opts.id)}`);
    if (opts.since) where.push(`last_updated >= $${params.push(opts.since)}`);
    if (opts.before) where.push(`last_updated < $${params.push(opts.before)}`);
    if (opts.cursor) {
      const c = decodeHistoryCursor(opts.cursor);
      where.push(`(last_updated, resource_type, id, version_id) < ($${params.push(c[0])}::timestamptz, $${params.push(c[1])}, $${params.push(c[2])}, $${params.push(c[3])}::int)`);
    }
    const count = Math.min(Math.max(opts.count ?? 50, 1), 1001);
    const rows = await this.db.query<{ resource_type: string; id: string; version_id: number; last_updated: Date; deleted: boolean; content: string | null }>(
      `SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource_version
       ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY last_updated DESC, resource_type DESC, id DESC, version_id DESC LIMIT ${count}`,
      params,
    );
    if (opts.resourceType && opts.id && rows.length === 0 && !opts.since && !opts.before && !opts.cursor) throw notFound(`${opts.resourceType}/${opts.id}`);
    return rows.map((r) => ({
      resourceType: r.resource_type,
      id: r.id,
      versionId: String(r.version_id),
      lastUpdated: new Date(r.last_updated).toISOString(),
      deleted: r.deleted,
      resource: r.content ? (JSON.parse(r.content) as Resource) : undefined,
      method: r.deleted ? 'DELETE' : Number(r.version_id) === 1 ? 'POST' : 'PUT',
    }));
  }

  /**
   * Patient/$everything: the Patient and every current resource in its compartment (rows carry the patient they
   * belong to), in (type, id) order, paged by a keyset cursor; `types` and `since` narrow it.
   */
  async everything(patientId: string, opts: { types?: string[]; since?: string; count: number; after?: [string, string] }): Promise<Resource[]> {
    const params: unknown[] = [patientId];
    const where = [`NOT deleted`, `(patient_key = $1 OR (resource_type = 'Patient' AND id = $1))`];
    if (opts.types?.length) where.push(`resource_type = ANY($${params.push(opts.types)}::text[])`);
    if (opts.since) where.push(`last_updated >= $${params.push(opts.since)}::timestamptz`);
    if (opts.after) where.push(`(resource_type, id) > ($${params.push(opts.after[0])}, $${params.push(opts.after[1])})`);
    const rows = await this.db.query<{ content: string }>(
      `SELECT content FROM resource WHERE ${where.join(' AND ')} ORDER BY resource_type, id LIMIT ${Math.min(Math.max(opts.count, 1), 1001)}`,
      params,
    );
    return rows.map((r) => JSON.parse(r.content) as Resource);
  }

  search<T extends Resource = Resource>(req: SearchRequest): Promise<SearchResult<T>> {
    return new Writer(this.db, this.opts).search<T>(req);
  }
}

/**
 * The repository on behalf of one caller: the only way the FHIR API reaches stored data. Each method is the
 * repository's, with the caller's guard applied inside the store (store/guard.ts).
 */
export class CallerRepository {
  constructor(
    private readonly repo: Repository,
    readonly guard: Guard | undefined,
  ) {}

  private writer(): Writer {
    return new Writer(this.repo.db, this.repo.options, this.guard);
  }

  transaction<T>(fn: (w: Writer) => Promise<T>): Promise<T> {
    return this.repo.db.transaction((tx) => fn(new Writer(tx, this.repo.options, this.guard)));
  }

  read<T extends Resource = Resource>(resourceType: string, id: string): Promise<T> {
    return this.writer().read<T>(resourceType, id);
  }

  /** The stored JSON text as the caller may see it: the stored text itself when the caller sees all of it. */
  async readRaw(resourceType: string, id: string): Promise<{ content: string; versionId: string; lastUpdated: string }> {
    this.guard?.allow(resourceType, 'r');
    const raw = await this.repo.readRaw(resourceType, id);
    if (!this.guard) return raw;
    const stored = JSON.parse(raw.content) as Resource;
    const shown = await this.guard.reveal(stored);
    return shown === stored ? raw : { ...raw, content: JSON.stringify(shown) };
  }

  async vread<T extends Resource = Resource>(resourceType: string, id: string, versionId: string): Promise<T> {
    this.guard?.allow(resourceType, 'r');
    const r = await this.repo.vread<T>(resourceType, id, versionId);
    return this.guard ? this.guard.reveal(r) : r;
  }

  /** A cursor as this caller was given it: sealed when the caller does not see everything (store/cursors.ts). */
  private async cursorIn(c: string | undefined, param = '_cursor'): Promise<string | undefined> {
    return c && this.guard && !this.guard.seesAll ? openCursor(this.repo.db, c, param) : c;
  }

  private async cursorOut(c: string | undefined): Promise<string | undefined> {
    return c && this.guard && !this.guard.seesAll ? sealCursor(this.repo.db, c) : c;
  }

  /**
   * History as the caller may see it: versions of what it may see (as it may see them); deletions tell nothing. A
   * page is filled from further raw pages (a few at most) when versions are left out, so an empty page with a `next`
   * link does not say that hidden versions exist; `next` is an opaque cursor.
   */
  async history(opts: Parameters<Repository['history']>[0] = {}): Promise<{ entries: HistoryEntry[]; next?: string }> {
    const count = opts.count ?? 50;
    const g = this.guard;
    if (g) {
      if (!opts.resourceType && !g.seesAll) throw new OutcomeError('forbidden', 'system-wide history is only for callers who may see every person');
      g.allow(opts.resourceType ?? '*', 'r');
    }
    let cursor = await this.cursorIn(opts.cursor);
    const entries: HistoryEntry[] = [];
    for (let round = 0; round < (g ? 8 : 1); round++) {
      const rows = await this.repo.history({ ...opts, cursor, count: count + 1 });
      const more = rows.length > count;
      const page = more ? rows.slice(0, count) : rows;
      cursor = more ? encodeHistoryCursor(page[page.length - 1]) : undefined;
      if (!g) {
        entries.push(...page);
        break;
      }
      const withContent = page.filter((h) => h.resource);
      const shown = await g.filter(withContent.map((h) => h.resource!));
      const byVersion = new Map(shown.map((r) => [`${r.resourceType}/${r.id}/${r.meta?.versionId}`, r]));
      for (const h of withContent) {
        const r = byVersion.get(`${h.resourceType}/${h.id}/${h.versionId}`);
        if (r) entries.push({ ...h, resource: r });
      }
      // one resource's history is refused as its read is (403), not answered with an empty page that confirms it
      if (opts.id && round === 0 && withContent.length && entries.length === 0) await g.reveal(withContent[0].resource!);
      if (!cursor || entries.length >= count) break;
    }
    if (entries.length > count) {
      // a fill round brought more than the page holds: the rest comes again after the last one shown
      entries.length = count;
      cursor = encodeHistoryCursor(entries[entries.length - 1]);
    }
    return { entries, next: await this.cursorOut(cursor) };
  }

  /** Patient/$everything: the Patient must be visible to the caller (403 otherwise), then what of it the caller may see. */
  async everything(patientId: string, opts: Omit<Parameters<Repository['everything']>[1], 'after'> & { cursor?: string }): Promise<{ page: Resource[]; next?: string }> {
    await this.read('Patient', patientId);
    const raw = await this.cursorIn(opts.cursor);
    let after: [string, string] | undefined;
    if (raw) {
      const v = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(this.guard && !this.guard.seesAll ? raw : Buffer.from(raw, 'base64url').toString('utf8'));
      if (!v) throw new OutcomeError('invalid', '_cursor is not a cursor this server issued', '_cursor');
      after = [v[1], v[2]];
    }
    const page: Resource[] = [];
    let more = false;
    for (let round = 0; round < (this.guard ? 8 : 1); round++) {
      const rows = await this.repo.everything(patientId, { ...opts, after, count: opts.count + 1 });
      more = rows.length > opts.count;
      const slice = more ? rows.slice(0, opts.count) : rows;
      page.push(...(this.guard ? await this.guard.filter(slice) : slice));
      const last = slice[slice.length - 1];
      after = last ? [last.resourceType, last.id!] : after;
      if (!more || page.length >= opts.count) break;
    }
    if (page.length > opts.count) {
      page.length = opts.count;
      after = [page[page.length - 1].resourceType, page[page.length - 1].id!];
      more = true;
    }
    if (!more || !after) return { page };
    const token = `${after[0]}/${after[1]}`;
    return { page, next: this.guard && !this.guard.seesAll ? await sealCursor(this.repo.db, token) : Buffer.from(token).toString('base64url') };
  }

  /**
   * Search as the caller may see it. For a caller who does not see everything, a page left short by the filter is
   * filled from the next raw pages (a few at most) — so an empty page with a `next` link does not say that hidden
   * matches exist — and the cursor is sealed (it may name a hidden resource).
   */
  async search<T extends Resource = Resource>(req: SearchRequest): Promise<SearchResult<T>> {
    if (!this.guard || this.guard.seesAll) return this.writer().search<T>(req);
    const want = req.count ?? 20;
    let cursor = await this.cursorIn(req.cursor);
    let out: SearchResult<T> | undefined;
    for (let round = 0; round < 8; round++) {
      const got = out?.resources.length ?? 0;
      const r = await this.writer().search<T>({ ...req, cursor, count: want - got });
      if (!out) out = r;
      else {
        out.resources.push(...r.resources);
        const seen = new Set(out.included.map((x) => `${x.resourceType}/${x.id}`));
        out.included.push(...r.included.filter((x) => !seen.has(`${x.resourceType}/${x.id}`)));
      }
      cursor = r.nextCursor;
      if (!cursor || want === 0 || out.resources.length >= want) break;
    }
    return { ...out!, nextCursor: await this.cursorOut(cursor) };
  }

  delete(resourceType: string, id: string): Promise<{ versionId?: string }> {
    return this.transaction((w) => w.delete(resourceType, id));
  }
}

export function encodeHistoryCursor(e: HistoryEntry): string {
  return Buffer.from(JSON.stringify([e.lastUpdated, e.resourceType, e.id, Number(e.versionId)])).toString('base64url');
}

function decodeHistoryCursor(c: string): [string, string, string, number] {
  try {
    const v = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v.length === 4 && typeof v[0] === 'string' && !Number.isNaN(Date.parse(v[0])) && typeof v[1] === 'string' && typeof v[2] === 'string' && Number.isInteger(v[3])) {
      return v as [string, string, string, number];
    }
  } catch {
    // fall through
  }
  throw new OutcomeError('invalid', '_cursor is not a cursor this server issued', '_cursor');
}
