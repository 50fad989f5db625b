/**
 * The FHIR repository: create, read, vread, update, delete, history, search — written once over `Db`, so PGlite
 * and PostgreSQL behave the same. Conditional create is built here from search + an advisory lock, inside the
 * write's own transaction, which makes it race-safe on both backends.
 *
 * @see https://hl7.org/fhir/R4/http.html (create, read, vread, update, delete, history, conditional create)
 * @see https://hl7.org/fhir/R4/resource.html#Meta (versionId and lastUpdated are assigned by the server)
 */
import crypto from 'node:crypto';
import type { Resource } from '../fhir/types.js';
import { OutcomeError, notFound } from '../fhir/outcome.js';
import type { Db, Queryable } from './db.js';
import { buildSearch, cursorAfter, type SearchRequest, type SearchResult, parseSearchQuery } from './search.js';
import { indexRows, type IndexRows } from './indexer.js';
import { parseIncludes, resolveIncludes } from './include.js';

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

export interface WriteResult<T extends Resource = Resource> {
  resource: T;
  /** created: a new resource; updated: a new version; unchanged: identical content, no new version; existing: conditional create matched */
  outcome: 'created' | 'updated' | 'unchanged' | 'existing';
}

export interface RepositoryOptions {
  /** throws an OutcomeError when a resource is not valid; called before every write */
  validate?: (resource: Resource) => void;
  /** called with the current and the next version before an update; throws to refuse it (status lifecycles) */
  checkUpdate?: (current: Resource, next: Resource) => void;
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export function assertId(id: string, where = 'id'): void {
  if (!ID.test(id)) throw new OutcomeError('invalid', `"${id}" is not a valid FHIR id ([A-Za-z0-9-.]{1,64})`, where);
}

/** Content without meta.versionId/lastUpdated, for "did anything change" comparisons. */
function stableContent(r: Resource): string {
  const { meta, ...rest } = r;
  const m = meta ? { ...meta } : undefined;
  if (m) {
    delete m.versionId;
    delete m.lastUpdated;
  }
  return canonicalJson(m && Object.keys(m).length ? { ...rest, meta: m } : rest);
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  if (v && typeof v === 'object') {
    return '{' + Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort().map((k) => JSON.stringify(k) + ':' + canonicalJson((v as Record<string, unknown>)[k])).join(',') + '}';
  }
  return JSON.stringify(v);
}

/** Writes and reads inside one transaction. Several writes through one Writer commit together. */
export class Writer {
  constructor(
    readonly tx: Queryable,
    private readonly opts: RepositoryOptions,
  ) {}

  async read<T extends Resource = Resource>(resourceType: string, id: string): Promise<T> {
    const rows = await this.tx.query<{ content: string; deleted: boolean }>(
      `SELECT content, deleted FROM resource WHERE resource_type = $1 AND id = $2`,
      [resourceType, id],
    );
    if (rows.length === 0) throw notFound(`${resourceType}/${id}`);
    if (rows[0].deleted) throw new OutcomeError('gone', `${resourceType}/${id} has been deleted`);
    return JSON.parse(rows[0].content) as T;
  }

  async readOptional<T extends Resource = Resource>(resourceType: string, id: string): Promise<T | undefined> {
    const rows = await this.tx.query<{ content: string; deleted: boolean }>(
      `SELECT content, deleted FROM resource WHERE resource_type = $1 AND id = $2`,
      [resourceType, id],
    );
    return rows.length && !rows[0].deleted ? (JSON.parse(rows[0].content) as T) : undefined;
  }

  /** create: a new id is assigned unless `id` is given (used by mappings with deterministic ids). */
  async create<T extends Resource>(resource: T, opts: { ifNoneExist?: string } = {}): Promise<WriteResult<T>> {
    if (opts.ifNoneExist !== undefined) {
      const found = await this.conditionalMatch(resource.resourceType, opts.ifNoneExist);
      if (found) return { resource: found as T, outcome: 'existing' };
    }
    const id = crypto.randomUUID();
    return this.put({ ...resource, id }, {});
  }

  /**
   * update (PUT): creates the resource when the id is new ("update as create"); with `ifMatch`, refuses with
   * 412 unless the current version is that one. Identical content makes no new version.
   */
  async update<T extends Resource>(resource: T, opts: { ifMatch?: string } = {}): Promise<WriteResult<T>> {
    if (!resource.id) throw new OutcomeError('invalid', 'update needs Resource.id', `${resource.resourceType}.id`);
    return this.put(resource, opts);
  }

  private async put<T extends Resource>(resource: T, opts: { ifMatch?: string }): Promise<WriteResult<T>> {
    const type = resource.resourceType;
    const id = resource.id as string;
    assertId(id, `${type}.id`);
    this.opts.validate?.(resource);
    await this.lock(`res|${type}|${id}`);
    const rows = await this.tx.query<{ version_id: number; deleted: boolean; content: string }>(
      `SELECT version_id, deleted, content FROM resource WHERE resource_type = $1 AND id = $2`,
      [type, id],
    );
    const current = rows[0];
    if (opts.ifMatch !== undefined) {
      if (!current || String(current.version_id) !== opts.ifMatch) {
        throw new OutcomeError(
          'precondition',
          `If-Match version ${opts.ifMatch} is not the current version of ${type}/${id} (current: ${current ? current.version_id : 'none'})`,
        );
      }
    }
    if (current && !current.deleted) {
      const old = JSON.parse(current.content) as Resource;
      if (stableContent(old) === stableContent(resource)) return { resource: old as T, outcome: 'unchanged' };
      this.opts.checkUpdate?.(old, resource);
    }
    const versionId = current ? Number(current.version_id) + 1 : 1;
    const lastUpdated = new Date().toISOString();
    const stored = { ...resource, meta: { ...resource.meta, versionId: String(versionId), lastUpdated } } as T;
    const content = JSON.stringify(stored);
    const index = indexRows(stored);
    const patientKey = index.patientKey;
    if (current) {
      await this.tx.query(
        `UPDATE resource SET version_id = $3, last_updated = $4, deleted = false, patient_key = $5, content = $6
         WHERE resource_type = $1 AND id = $2`,
        [type, id, versionId, lastUpdated, patientKey, content],
      );
    } else {
      await this.tx.query(
        `INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, patient_key, content)
         VALUES ($1, $2, $3, $4, false, $5, $6)`,
        [type, id, versionId, lastUpdated, patientKey, content],
      );
    }
    await this.tx.query(
      `INSERT INTO resource_version (resource_type, id, version_id, last_updated, deleted, patient_key, content)
       VALUES ($1, $2, $3, $4, false, $5, $6)`,
      [type, id, versionId, lastUpdated, patientKey, content],
    );
    await this.writeIndex(type, id, index, current !== undefined);
    return { resource: stored, outcome: current && !current.deleted ? 'updated' : 'created' };
  }

  /** delete: a new, empty version marks the resource deleted; history keeps every earlier version. */
  async delete(resourceType: string, id: string): Promise<{ versionId?: string }> {
    assertId(id);
    await this.lock(`res|${resourceType}|${id}`);
    const rows = await this.tx.query<{ version_id: number; deleted: boolean; patient_key: string | null }>(
      `SELECT version_id, deleted, patient_key FROM resource WHERE resource_type = $1 AND id = $2`,
      [resourceType, id],
    );
    if (rows.length === 0 || rows[0].deleted) return {};
    const versionId = Number(rows[0].version_id) + 1;
    const lastUpdated = new Date().toISOString();
    await this.tx.query(`UPDATE resource SET version_id = $3, last_updated = $4, deleted = true WHERE resource_type = $1 AND id = $2`, [
      resourceType,
      id,
      versionId,
      lastUpdated,
    ]);
    await this.tx.query(
      `INSERT INTO resource_version (resource_type, id, version_id, last_updated, deleted, patient_key, content) VALUES ($1, $2, $3, $4, true, $5, NULL)`,
      [resourceType, id, versionId, lastUpdated, rows[0].patient_key],
    );
    await this.writeIndex(resourceType, id, undefined, true);
    return { versionId: String(versionId) };
  }

  /** Search inside this transaction. */
  async search<T extends Resource = Resource>(req: SearchRequest): Promise<SearchResult<T>> {
    const built = buildSearch(req);
    const rows = await this.tx.query<{ content: string; seq: string }>(built.sql, built.params);
    const more = rows.length > built.limit;
    const page = more ? rows.slice(0, built.limit) : rows;
    let total: number | undefined;
    if (built.countSql) total = Number((await this.tx.query<{ n: string }>(built.countSql, built.countParams))[0].n);
    const allow = req.access ?? ((r: Resource) => r);
    const resources = page.map((r) => allow(JSON.parse(r.content) as Resource)).filter((r): r is Resource => r !== undefined) as T[];
    const specs = parseIncludes(req.params, req.strict ?? false, built.issues);
    const included = await resolveIncludes(this.tx, resources, specs, allow);
    return {
      resources,
      included,
      nextCursor: more && page.length ? cursorAfter(page[page.length - 1], built.sortKeys) : undefined,
      total,
      issues: built.issues,
    };
  }

  /**
   * The resource a conditional create/update criteria string matches, or undefined. Several → 412.
   * Serialised per criteria with an advisory lock held to the end of the transaction: two concurrent
   * conditional creates with the same criteria cannot both create.
   */
  async conditionalMatch(resourceType: string, criteria: string): Promise<Resource | undefined> {
    const query = parseSearchQuery(criteria.replace(/^\?/, ''));
    if (query.length === 0) throw new OutcomeError('invalid', 'conditional criteria are empty', 'If-None-Exist');
    const key = query
      .map(([k, v]) => `${k}=${v}`)
      .sort()
      .join('&');
    await this.lock(`cond|${resourceType}|${key}`);
    const res = await this.search({ resourceType, params: query, count: 2, strict: true });
    if (res.resources.length > 1) {
      throw new OutcomeError('precondition', `conditional criteria "${criteria}" match more than one ${resourceType}`);
    }
    return res.resources[0];
  }

  private async lock(key: string): Promise<void> {
    await this.tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [key]);
  }

  private async writeIndex(type: string, id: string, rows: IndexRows | undefined, replace: boolean): Promise<void> {
    if (replace) {
      for (const t of ['idx_token', 'idx_string', 'idx_reference', 'idx_date', 'idx_quantity']) {
        await this.tx.query(`DELETE FROM ${t} WHERE resource_type = $1 AND resource_id = $2`, [type, id]);
      }
    }
    if (!rows) return;
    const pk = rows.patientKey;
    if (rows.token.length) {
      await this.tx.query(
        `INSERT INTO idx_token (resource_type, resource_id, param, system, code, patient_key)
         SELECT $1, $2, p, s, c, $3 FROM unnest($4::text[], $5::text[], $6::text[]) AS u(p, s, c)`,
        [type, id, pk, rows.token.map((t) => t.param), rows.token.map((t) => t.system ?? null), rows.token.map((t) => t.code ?? null)],
      );
    }
    if (rows.string.length) {
      await this.tx.query(
        `INSERT INTO idx_string (resource_type, resource_id, param, value, patient_key)
         SELECT $1, $2, p, v, $3 FROM unnest($4::text[], $5::text[]) AS u(p, v)`,
        [type, id, pk, rows.string.map((t) => t.param), rows.string.map((t) => t.value)],
      );
    }
    if (rows.reference.length) {
      await this.tx.query(
        `INSERT INTO idx_reference (resource_type, resource_id, param, target_type, target_id, patient_key)
         SELECT $1, $2, p, tt, ti, $3 FROM unnest($4::text[], $5::text[], $6::text[]) AS u(p, tt, ti)`,
        [type, id, pk, rows.reference.map((t) => t.param), rows.reference.map((t) => t.targetType), rows.reference.map((t) => t.targetId)],
      );
    }
    if (rows.date.length) {
      await this.tx.query(
        `INSERT INTO idx_date (resource_type, resource_id, param, low, high, patient_key)
         SELECT $1, $2, p, l, h, $3 FROM unnest($4::text[], $5::timestamptz[], $6::timestamptz[]) AS u(p, l, h)`,
        [type, id, pk, rows.date.map((t) => t.param), rows.date.map((t) => t.low), rows.date.map((t) => t.high)],
      );
    }
    if (rows.quantity.length) {
      await this.tx.query(
        `INSERT INTO idx_quantity (resource_type, resource_id, param, value, system, code, patient_key)
         SELECT $1, $2, p, v, s, c, $3 FROM unnest($4::text[], $5::numeric[], $6::text[], $7::text[]) AS u(p, v, s, c)`,
        [
          type,
          id,
          pk,
          rows.quantity.map((t) => t.param),
          rows.quantity.map((t) => t.value),
          rows.quantity.map((t) => t.system ?? null),
          rows.quantity.map((t) => t.code ?? null),
        ],
      );
    }
  }
}

/** The repository: each call is its own transaction; `transaction()` groups several writes into one. */
export class Repository {
  constructor(
    readonly db: Db,
    private readonly opts: RepositoryOptions = {},
  ) {}

  transaction<T>(fn: (w: Writer) => Promise<T>): Promise<T> {
    return this.db.transaction((tx) => fn(new Writer(tx, this.opts)));
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
   * `since` keeps versions written at or after an instant; `before` pages back in time.
   */
  async history(opts: { resourceType?: string; id?: string; since?: string; before?: string; count?: number } = {}): Promise<HistoryEntry[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (opts.resourceType) where.push(`resource_type = $${params.push(opts.resourceType)}`);
    if (opts.id) where.push(`id = $${params.push(opts.id)}`);
    if (opts.since) where.push(`last_updated >= $${params.push(opts.since)}`);
    if (opts.before) where.push(`last_updated < $${params.push(opts.before)}`);
    const count = Math.min(Math.max(opts.count ?? 50, 1), 1000);
    const rows = await this.db.query<{ resource_type: string; id: string; version_id: number; last_updated: Date; deleted: boolean; content: string | null }>(
      `SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource_version
       ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY last_updated DESC, version_id DESC LIMIT ${count}`,
      params,
    );
    if (opts.resourceType && opts.id && rows.length === 0 && !opts.since && !opts.before) throw notFound(`${opts.resourceType}/${opts.id}`);
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

  search<T extends Resource = Resource>(req: SearchRequest): Promise<SearchResult<T>> {
    return new Writer(this.db, this.opts).search<T>(req);
  }
}
