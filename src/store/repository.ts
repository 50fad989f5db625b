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
import { parseStored, textOnly } from './stored.js';
import { indexRows, noIndexRows, type IndexRows } from './indexer.js';
import { referenceParamsTo } from '../fhir/searchparams.js';
import { includeSql, MAX_INCLUDED, parseIncludes, resolveIncludes, type IncludedRow } from './include.js';
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

export interface WriteResult<T extends Resource = Resource> {
  resource: T;
  /** created: a new resource; updated: a new version; unchanged: identical content, no new version; existing: conditional create matched */
  outcome: 'created' | 'updated' | 'unchanged' | 'existing';
}

export interface UpdateOptions {
  /** refuse unless the current version is this one (412) */
  ifMatch?: string;
  /**
   * The ids are new (e.g. Provenance ids derived from the versions they point at): a unit of work does not read
   * them first; its flush still verifies, under lock, that none exists.
   */
  expectNew?: boolean;
}

export interface RepositoryOptions {
  /** throws an OutcomeError when a resource is not valid; called before every write */
  validate?: (resource: Resource) => void;
  /** called with the current and the next version before an update; throws to refuse it (status lifecycles) */
  checkUpdate?: (current: Resource, next: Resource) => void;
}

const ID = /^[A-Za-z0-9\-.]{1,64}$/;
const INDEX_TABLES = ['idx_token', 'idx_string', 'idx_reference', 'idx_date', 'idx_quantity'];

export interface BatchItem {
  r: Resource;
  content: string;
  /** the Patient compartment of this version */
  patientKey: string | null;
  /** the search index rows; computed when the version is written as the current row (writeBatch) */
  index?: IndexRows;
  /**
   * For an update: the index rows stored now (those of the version being replaced, or none for a deleted one), when
   * the writer knows them. Then only the rows that differ are deleted and inserted — a plan that gains one activity
   * changes one row instead of rewriting all of them.
   */
  prior?: IndexRows;
}

type Kind = 'token' | 'string' | 'reference' | 'date' | 'quantity';
const KINDS: Kind[] = ['token', 'string', 'reference', 'date', 'quantity'];
const NUL = '\u0000';
/** What identifies an index row of a resource (the columns a delete matches on). */
const ROW_KEY: { [K in Kind]: (r: IndexRows[K][number]) => string } = {
  token: (r) => `${r.param}${NUL}${r.system ?? NUL}${NUL}${r.code ?? NUL}`,
  string: (r) => `${r.param}${NUL}${r.value}${NUL}${r.exact}`,
  reference: (r) => `${r.param}${NUL}${r.targetType}${NUL}${r.targetId}`,
  date: (r) => `${r.param}${NUL}${r.low}${NUL}${r.high}`,
  quantity: (r) => `${r.param}${NUL}${r.value}${NUL}${r.system ?? NUL}${NUL}${r.code ?? NUL}`,
};

/**
 * The rows to delete and to insert to go from `before` to `after`; undefined when a plain rewrite is needed: the
 * compartment changed (every row carries it), or a list holds the same row twice (a delete by value would take both).
 */
function indexChange(before: IndexRows, after: IndexRows): { removed: IndexRows; added: IndexRows } | undefined {
  if (before.patientKey !== after.patientKey) return undefined;
  const removed = { patientKey: before.patientKey } as IndexRows;
  const added = { patientKey: after.patientKey } as IndexRows;
  for (const kind of KINDS) {
    const key = ROW_KEY[kind] as (r: unknown) => string;
    const old = new Set((before[kind] as unknown[]).map(key));
    const now = new Set((after[kind] as unknown[]).map(key));
    if (old.size !== before[kind].length || now.size !== after[kind].length) return undefined;
    (removed[kind] as unknown[]) = (before[kind] as unknown[]).filter((r) => !now.has(key(r)));
    (added[kind] as unknown[]) = (after[kind] as unknown[]).filter((r) => !old.has(key(r)));
  }
  return { removed, added };
}

export function assertId(id: string, where = 'id'): void {
  if (!ID.test(id)) throw new OutcomeError('invalid', `"${id}" is not a valid FHIR id ([A-Za-z0-9-.]{1,64})`, where);
}

/** The resources of an update list, each with a valid id, a resource listed twice only once (its first occurrence). */
export function uniqueById(resources: Resource[]): Resource[] {
  const unique = new Map<string, Resource>();
  for (const r of resources) {
    if (!r.id) throw new OutcomeError('invalid', 'update needs Resource.id', `${r.resourceType}.id`);
    assertId(r.id, `${r.resourceType}.id`);
    const k = `${r.resourceType}/${r.id}`;
    if (!unique.has(k)) unique.set(k, r);
  }
  return [...unique.values()];
}

/**
 * Whether two versions have the same content apart from meta.versionId/lastUpdated ("did anything change"):
 * the canonical JSON of both would be equal — key order and undefined members do not count — without building it.
 */
export function sameContent(a: Resource, b: Resource): boolean {
  const { meta: ma, ...ra } = a;
  const { meta: mb, ...rb } = b;
  return jsonEqual(ra, rb) && jsonEqual(stableMeta(ma), stableMeta(mb));
}

function stableMeta(meta: Resource['meta']): Record<string, unknown> {
  if (!meta) return {};
  const { versionId: _v, lastUpdated: _l, ...rest } = meta;
  return rest;
}

/** Deep equality of JSON values: object member order and members whose value is undefined do not count. */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
    return typeof a === 'number' && typeof b === 'number' ? JSON.stringify(a) === JSON.stringify(b) : false;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false;
    return true;
  }
  const oa = a as Record<string, unknown>;
  const ob = b as Record<string, unknown>;
  let na = 0;
  for (const k in oa) {
    if (oa[k] === undefined) continue;
    na++;
    if (!jsonEqual(oa[k], ob[k])) return false;
  }
  let nb = 0;
  for (const k in ob) if (ob[k] !== undefined) nb++;
  return na === nb;
}

export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  if (v && typeof v === 'object') {
    return '{' + Object.keys(v).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort().map((k) => JSON.stringify(k) + ':' + canonicalJson((v as Record<string, unknown>)[k])).join(',') + '}';
  }
  return JSON.stringify(v);
}

/**
 * Writes and reads inside one transaction. Several writes through one Writer commit together. A Writer with a
 * guard acts for a caller: every read, search, write and delete passes the caller's policy (store/guard.ts).
 */
export class Writer {
  /** advisory locks this transaction holds (they are released at its end) */
  private readonly held = new Set<string>();

  constructor(
    readonly tx: Queryable,
    protected readonly opts: RepositoryOptions,
    readonly guard?: Guard,
  ) {}

  /** The same transaction without the caller's policy: for the gateway's own work (plan assembly, Provenance). */
  trusted(): Writer {
    return this.guard ? new Writer(this.tx, this.opts) : this;
  }

  /** Which of these `Type/id` exist (current, not deleted): existence only, no content — for reference checks. */
  async exists(keys: [string, string][]): Promise<Set<string>> {
    if (keys.length === 0) return new Set();
    const rows = await this.tx.query<{ resource_type: string; id: string }>(
      `SELECT resource_type, id FROM resource WHERE NOT deleted AND (resource_type, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [keys.map((k) => k[0]), keys.map((k) => k[1])],
    );
    return new Set(rows.map((r) => `${r.resource_type}/${r.id}`));
  }

  /**
   * Takes transaction-scoped advisory locks on several keys in one statement, in sorted order (two transactions
   * locking overlapping sets cannot deadlock on them); keys already held are skipped.
   */
  async lockKeys(keys: string[]): Promise<void> {
    const toLock = [...new Set(keys)].filter((k) => !this.held.has(k)).sort();
    if (toLock.length === 0) return;
    await this.tx.query(`SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k`, [toLock]);
    for (const k of toLock) this.held.add(k);
  }

  /** The current resources that reference `type/id` (any parameter), as [type, id]. */
  async referencesTo(targetType: string, targetId: string): Promise<[string, string][]> {
    // one probe of the reference index per reference parameter of any type (the index leads with type and param;
    // every parameter, not only those declaring the target type, so no referrer is missed); a rare operation (merge)
    const pairs = referenceParamsTo();
    const rows = await this.tx.query<{ resource_type: string; resource_id: string }>(
      `SELECT DISTINCT resource_type, resource_id FROM idx_reference
       WHERE (resource_type, param) IN (SELECT * FROM unnest($3::text[], $4::text[])) AND target_type = $1 AND target_id = $2`,
      [targetType, targetId, pairs.map((x) => x[0]), pairs.map((x) => x[1])],
    );
    return rows.map((r) => [r.resource_type, r.resource_id]);
  }

  async read<T extends Resource = Resource>(resourceType: string, id: string): Promise<T> {
    this.guard?.allow(resourceType, 'r');
    const rows = await this.tx.query<{ content: string; deleted: boolean }>(
      `SELECT content, deleted FROM resource WHERE resource_type = $1 AND id = $2`,
      [resourceType, id],
    );
    if (rows.length === 0) throw notFound(`${resourceType}/${id}`);
    if (rows[0].deleted) throw new OutcomeError('gone', `${resourceType}/${id} has been deleted`);
    const r = JSON.parse(rows[0].content) as T;
    return this.guard ? this.guard.reveal(r, this.tx) : r;
  }

  /** The current resource, or undefined when there is none — or, with a guard, when the caller may not see it. */
  async readOptional<T extends Resource = Resource>(resourceType: string, id: string): Promise<T | undefined> {
    const rows = await this.tx.query<{ content: string; deleted: boolean }>(
      `SELECT content, deleted FROM resource WHERE resource_type = $1 AND id = $2`,
      [resourceType, id],
    );
    const r = rows.length && !rows[0].deleted ? (JSON.parse(rows[0].content) as T) : undefined;
    return r && this.guard ? (await this.guard.filter([r], this.tx))[0] : r;
  }

  /** Several current resources in one query, by `Type/id` (deleted and missing ones are absent; with a guard, hidden ones too). */
  async readMany(keys: [string, string][]): Promise<Map<string, Resource>> {
    if (keys.length === 0) return new Map();
    const rows = await this.tx.query<{ content: string }>(
      `SELECT content FROM resource WHERE NOT deleted AND (resource_type, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [keys.map((k) => k[0]), keys.map((k) => k[1])],
    );
    let found = rows.map((r) => JSON.parse(r.content) as Resource);
    if (this.guard) found = await this.guard.filter(found, this.tx);
    return new Map(found.map((r) => [`${r.resourceType}/${r.id}`, r]));
  }

  /** create: a new id is assigned unless `id` is given (used by mappings with deterministic ids). */
  async create<T extends Resource>(resource: T, opts: { ifNoneExist?: string } = {}): Promise<WriteResult<T>> {
    if (opts.ifNoneExist !== undefined) {
      const found = await this.conditionalMatch(resource.resourceType, opts.ifNoneExist);
      if (found) return { resource: (await this.shown(found)) as T, outcome: 'existing' };
    }
    const id = crypto.randomUUID();
    return this.update({ ...resource, id });
  }

  /**
   * update (PUT): creates the resource when the id is new ("update as create"); with `ifMatch`, refuses with
   * 412 unless the current version is that one. Identical content makes no new version.
   */
  async update<T extends Resource>(resource: T, opts: UpdateOptions = {}): Promise<WriteResult<T>> {
    if (!resource.id) throw new OutcomeError('invalid', 'update needs Resource.id', `${resource.resourceType}.id`);
    return (await this.updateMany([resource], opts))[0] as WriteResult<T>;
  }

  /**
   * Several updates in a handful of set-based statements (one lock statement, one read, one insert or update
   * per table): a converted message writes its twenty-odd resources this way. Results are in input order;
   * a resource listed twice is written once (its first occurrence).
   */
  async updateMany(resources: Resource[], opts: UpdateOptions = {}): Promise<WriteResult[]> {
    const ifMatch = opts.ifMatch;
    const keyOf = (r: Resource): string => `${r.resourceType}/${r.id}`;
    const list = uniqueById(resources);
    // only what will be written is validated (what is sent back unchanged was valid when it was stored — the
    // gateway's own profiles, re-sent at every start, are large), and a caller's writes are checked against its
    // rights first: a refusal tells nothing about the content's validity
    const selectCurrent = async (rs: Resource[]) =>
      new Map(
        (
          await this.tx.query<{ resource_type: string; id: string; version_id: number; deleted: boolean; content: string }>(
            `SELECT resource_type, id, version_id, deleted, content FROM resource
             WHERE (resource_type, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
            [rs.map((r) => r.resourceType), rs.map((r) => r.id)],
          )
        ).map((r) => [`${r.resource_type}/${r.id}`, r]),
      );
    // Read first without locks: resources many messages share (the GP, the sending hospital) are usually
    // unchanged, and need no lock. Only what will be written is locked — in one sorted order, so two writers of
    // overlapping sets cannot deadlock — and read again under the lock.
    let current = await selectCurrent(list);
    const unchanged = (r: Resource): boolean => {
      const cur = current.get(keyOf(r));
      return ifMatch === undefined && !!cur && !cur.deleted && sameContent(JSON.parse(cur.content) as Resource, r);
    };
    const toWrite = list.filter((r) => !unchanged(r));
    if (!this.guard) for (const r of toWrite) this.opts.validate?.(r);
    if (toWrite.length) {
      await this.lockKeys(toWrite.map((r) => `res|${r.resourceType}|${r.id}`));
      const fresh = await selectCurrent(toWrite);
      current = new Map([...current].filter(([k]) => !toWrite.some((r) => keyOf(r) === k)));
      for (const [k, v] of fresh) current.set(k, v);
    }
    if (this.guard) {
      // what would change, checked against the versions read under the lock (a resource the caller sends back
      // unchanged writes nothing and needs no right to write)
      for (const r of toWrite) {
        const cur = current.get(keyOf(r));
        await this.guard.write(cur && !cur.deleted ? (JSON.parse(cur.content) as Resource) : undefined, r, this.tx, !!cur?.deleted);
      }
      // what is sent back unchanged writes nothing — and answers only to a caller who may see all of it
      for (const r of list) {
        const cur = current.get(keyOf(r));
        if (cur && !cur.deleted && !toWrite.includes(r) && !(await this.mayChange(JSON.parse(cur.content) as Resource))) {
          await this.guard.reveal(JSON.parse(cur.content) as Resource, this.tx);
          throw new OutcomeError('forbidden', `${keyOf(r)} is not yours to write`);
        }
      }
      for (const r of toWrite) this.opts.validate?.(r);
    }
    if (ifMatch !== undefined) {
      const c = current.get(keyOf(list[0]));
      if (!c || String(c.version_id) !== ifMatch) {
        throw new OutcomeError('precondition', `If-Match version ${ifMatch} is not the current version of ${keyOf(list[0])} (current: ${c ? c.version_id : 'none'})`);
      }
    }
    const results = new Map<string, WriteResult>();
    const lastUpdated = new Date().toISOString();
    const inserts: BatchItem[] = [];
    const updates: BatchItem[] = [];
    for (const r of list) {
      const cur = current.get(keyOf(r));
      let old: Resource | undefined;
      if (cur && !cur.deleted) {
        old = JSON.parse(cur.content) as Resource;
        if (sameContent(old, r)) {
          results.set(keyOf(r), { resource: old, outcome: 'unchanged' });
          continue;
        }
        this.opts.checkUpdate?.(old, r);
      }
      const versionId = cur ? Number(cur.version_id) + 1 : 1;
      const stored = { ...r, meta: { ...r.meta, versionId: String(versionId), lastUpdated } } as Resource;
      const index = indexRows(stored);
      const entry: BatchItem = { r: stored, content: JSON.stringify(stored), patientKey: index.patientKey, index };
      // the rows stored for the version read under the lock (none for a deleted one): only the difference is written
      if (cur) entry.prior = old ? indexRows(old) : noIndexRows(index.patientKey);
      (cur ? updates : inserts).push(entry);
      results.set(keyOf(r), { resource: stored, outcome: cur && !cur.deleted ? 'updated' : 'created' });
    }
    const written = [...inserts, ...updates];
    if (written.length) await this.writeBatch(inserts, updates);
    return resources.map((r) => results.get(keyOf(r))!);
  }

  /** delete: a new, empty version marks the resource deleted; history keeps every earlier version. */
  async delete(resourceType: string, id: string): Promise<{ versionId?: string }> {
    assertId(id);
    await this.lockKeys([`res|${resourceType}|${id}`]);
    const rows = await this.tx.query<{ version_id: number; deleted: boolean; patient_key: string | null; seq: string }>(
      `SELECT version_id, deleted, patient_key, seq::text FROM resource WHERE resource_type = $1 AND id = $2`,
      [resourceType, id],
    );
    if (rows.length === 0 || rows[0].deleted) return {};
    if (this.guard) await this.guard.remove(await new Writer(this.tx, this.opts).read(resourceType, id), this.tx);
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
    await this.deleteIndex(rows[0].seq);
    return { versionId: String(versionId) };
  }

  /**
   * Search inside this transaction. With a guard: the scope, the reverse-chain rule, the caller's labels inside
   * chains, and every match and included resource filtered by the caller's policy.
   */
  async search<T extends Resource = Resource>(req: SearchRequest): Promise<SearchResult<T>> {
    const g = this.guard;
    if (!g) return this.searchAll<T>(req);
    g.allow(req.resourceType, 's');
    g.searching(req.params, req.resourceType);
    const filter = req.access;
    return this.searchAll<T>({
      ...req,
      total: g.seesAll ? req.total : undefined,
      hiddenLabels: g.hiddenLabels(),
      textsOnly: false,
      access: async (rs) => {
        const visible = await g.filter(rs, this.tx);
        return filter ? filter(visible) : visible;
      },
    });
  }

  /**
   * With a guard: the copy of a resource the caller may see, or, when it may not see it, a stub naming only its
   * type and id (conditional create must not echo what the caller may not read; the id is no secret — identity
   * ids are derived from the identifier the caller sent).
   */
  async shown<T extends Resource>(r: T): Promise<T> {
    if (!this.guard) return r;
    const [visible] = await this.guard.filter([r], this.tx);
    return visible ?? ({ resourceType: r.resourceType, id: r.id, meta: { versionId: r.meta?.versionId, lastUpdated: r.meta?.lastUpdated } } as T);
  }

  /** May the caller change `r` — see all of it (without a guard, always)? */
  async mayChange(r: Resource): Promise<boolean> {
    if (!this.guard) return true;
    const [visible] = await this.guard.filter([r], this.tx);
    return visible === r;
  }

  /** The search itself, every match (the caller's policy, if any, is in `req.access`). */
  private async searchAll<T extends Resource = Resource>(req: SearchRequest): Promise<SearchResult<T>> {
    const built = buildSearch(req);
    const specs = parseIncludes(req.params, req.strict ?? false, built.issues);
    let rows: PageRow[] | undefined;
    let firstRound: { rows: IncludedRow[] } | undefined;
    if (built.probeSql) {
      const probe = await this.tx.query<PageRow & { window_rows: number }>(built.probeSql, built.params);
      if (probe.length > built.limit || Number(probe[0]?.window_rows ?? built.probeWindow) < built.probeWindow!) rows = probe;
    }
    if (!rows && specs.length > 0 && built.sortKeys === 0 && built.limit > 0) {
      // the page and the first round of includes in one statement (the GP pull: plan + team + Provenance)
      const params = [...built.params];
      const inc = includeSql(specs, 'SELECT rt, rid FROM page', [req.resourceType], params);
      const combined = await this.tx.query<{ part: number; content: string; seq: string | null; src_type: string; src_id: string }>(
        `WITH page AS MATERIALIZED (${built.sql})
         SELECT 0 AS part, content, seq, rt AS src_type, rid AS src_id FROM page
         UNION ALL
         SELECT 1 AS part, i.content, NULL::text, i.src_type, i.src_id FROM (${inc} LIMIT ${MAX_INCLUDED}) i`,
        params,
      );
      // page rows carry their own type and id in src_type, src_id
      rows = combined.filter((r) => Number(r.part) === 0).map((r) => ({ content: r.content, seq: r.seq!, rt: r.src_type, rid: r.src_id }));
      rows.sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1)); // the page's order: seq ascending (no _sort)
      firstRound = { rows: combined.filter((r) => Number(r.part) === 1) };
    }
    rows ??= await this.tx.query<PageRow>(built.sql, built.params);
    const more = rows.length > built.limit;
    const page = more ? rows.slice(0, built.limit) : rows;
    let total: number | undefined;
    if (built.countSql) total = Number((await this.tx.query<{ n: string }>(built.countSql, built.countParams))[0].n);
    const allow = req.access ?? (async (rs: Resource[]) => rs);
    const resources = (
      req.textsOnly && !req.access ? page.map((r) => textOnly(r.rt, r.rid, r.content)) : await allow(page.map((r) => parseStored(r.content)))
    ) as T[];
    const included = await resolveIncludes(this.tx, resources, specs, allow, firstRound);
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
    await this.lockKeys([`cond|${resourceType}|${key}`]);
    // every match, whether or not the caller may see it: a conditional write must never make a second resource
    // because the first was hidden (the write that follows checks the caller's right to it)
    this.guard?.allow(resourceType, 's');
    this.guard?.conditional(query);
    const res = await this.searchAll({ resourceType, params: query, count: 2, strict: true });
    if (res.resources.length > 1) {
      throw new OutcomeError('precondition', `conditional criteria "${criteria}" match more than one ${resourceType}`);
    }
    return res.resources[0];
  }

  /**
   * Every row of a batch in ONE statement (data-modifying CTEs): new and changed resources, their versions,
   * and their index rows (old ones of changed resources deleted). One round trip, whatever the batch size.
   * `inserts` and `updates` are the resources' new current versions; `versions` every version to keep in history
   * (a unit of work may write several versions of one resource; by default the current ones).
   */
  protected async writeBatch(inserts: BatchItem[], updates: BatchItem[], versions?: BatchItem[]): Promise<void> {
    const written = [...inserts, ...updates];
    for (const it of written) it.index ??= indexRows(it.r);
    // Every version goes over the wire once: the current rows (inserts, updates) are picked from the version
    // arrays by position, so a resource's content is not sent twice.
    const all = versions ?? written;
    const position = new Map(all.map((x, i) => [x, i + 1]));
    const pos = (xs: BatchItem[]) => {
      const ns = xs.map((x) => position.get(x));
      if (ns.some((n) => n === undefined)) throw new Error('writeBatch: a current row that is not among the versions');
      return ns;
    };
    const params: unknown[] = [];
    const p = (v: unknown): string => `$${params.push(Array.isArray(v) ? arrayLiteral(v) : v)}`;
    // The contents travel as one JSON array spliced from the JSON texts (no per-element escaping, which costs more
    // than the rest of the statement); each element's text is stored exactly as it was serialised.
    const source = `unnest(${p(all.map((x) => x.r.resourceType))}::text[], ${p(all.map((x) => x.r.id))}::text[], ${p(all.map((x) => Number(x.r.meta!.versionId)))}::int[], ${p(all.map((x) => x.r.meta!.lastUpdated))}::timestamptz[], ${p(all.map((x) => x.patientKey))}::text[]) WITH ORDINALITY AS u(t, i, v, lu, pk, n)
      JOIN json_array_elements(${p(`[${all.map((x) => x.content).join(',')}]`)}::json) WITH ORDINALITY AS j(c, n) ON j.n = u.n`;
    const ctes: string[] = [`src AS MATERIALIZED (SELECT u.t, u.i, u.v, u.lu, u.pk, j.c::text AS c, u.n FROM ${source})`];
    if (inserts.length) {
      ctes.push(`ins AS (INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, patient_key, content)
        SELECT t, i, v, lu, false, pk, c FROM src JOIN unnest(${p(pos(inserts))}::int[]) AS k(n) USING (n)
        RETURNING resource_type, id, seq)`);
    }
    if (updates.length) {
      ctes.push(`upd AS (UPDATE resource r SET version_id = u.v, last_updated = u.lu, deleted = false, patient_key = u.pk, content = u.c
        FROM src u JOIN unnest(${p(pos(updates))}::int[]) AS k(n) USING (n) WHERE r.resource_type = u.t AND r.id = u.i
        RETURNING r.resource_type, r.id, r.seq)`);
    }
    // index rows of updated resources: only what differs where the stored rows are known, else all rewritten
    const changes = new Map<BatchItem, { removed: IndexRows; added: IndexRows }>();
    for (const it of updates) {
      const change = it.prior && indexChange(it.prior, it.index!);
      if (change) changes.set(it, change);
    }
    const rewritten = updates.filter((it) => !changes.has(it));
    // Index rows find their resource by its seq (schema migration 5): assigned by the insert above, kept by an update.
    // Deletes read it from the resource rows as the statement found them (an updated resource is there).
    if (rewritten.length) {
      const rewrittenSeqs = `SELECT o.seq FROM resource o WHERE (o.resource_type, o.id) IN (SELECT * FROM unnest(${p(rewritten.map((x) => x.r.resourceType))}::text[], ${p(rewritten.map((x) => x.r.id))}::text[]))`;
      for (const t of INDEX_TABLES) ctes.push(`del_${t} AS (DELETE FROM ${t} WHERE resource_seq IN (${rewrittenSeqs}))`);
    }
    const owner = (xs: { it: BatchItem }[]) => `${p(xs.map((x) => x.it.r.resourceType))}::text[], ${p(xs.map((x) => x.it.r.id))}::text[]`;
    const gone = <K extends Kind>(kind: K) => [...changes].flatMap(([it, c]) => (c.removed[kind] as IndexRows[K][number][]).map((row) => ({ it, row })));
    /** removed rows of changed resources: `cols` are the row's values after its param, compared by `match` (d.v0, d.v1, …) */
    const removed = (table: string, xs: { it: BatchItem; row: { param: string } }[], cols: string[], match: string): string =>
      `DELETE FROM ${table} t USING unnest(${owner(xs)}, ${p(xs.map((x) => x.row.param))}::text[], ${cols.join(', ')}) AS d(rt, ri, p${cols.map((_, i) => `, v${i}`).join('')})
        JOIN resource o ON o.resource_type = d.rt AND o.id = d.ri
        WHERE t.resource_seq = o.seq AND t.param = d.p AND ${match}`;
    const gToken = gone('token');
    if (gToken.length) {
      ctes.push(`g_token AS (${removed('idx_token', gToken, [`${p(gToken.map((x) => x.row.system ?? null))}::text[]`, `${p(gToken.map((x) => x.row.code ?? null))}::text[]`], 't.system IS NOT DISTINCT FROM d.v0 AND t.code IS NOT DISTINCT FROM d.v1')})`);
    }
    const gString = gone('string');
    if (gString.length) {
      ctes.push(`g_string AS (${removed('idx_string', gString, [`${p(gString.map((x) => x.row.value))}::text[]`, `${p(gString.map((x) => x.row.exact))}::text[]`], 't.value = d.v0 AND t.exact IS NOT DISTINCT FROM d.v1')})`);
    }
    const gRef = gone('reference');
    if (gRef.length) {
      ctes.push(`g_ref AS (${removed('idx_reference', gRef, [`${p(gRef.map((x) => x.row.targetType))}::text[]`, `${p(gRef.map((x) => x.row.targetId))}::text[]`], 't.target_type = d.v0 AND t.target_id = d.v1')})`);
    }
    const gDate = gone('date');
    if (gDate.length) {
      ctes.push(`g_date AS (${removed('idx_date', gDate, [`${p(gDate.map((x) => x.row.low))}::timestamptz[]`, `${p(gDate.map((x) => x.row.high))}::timestamptz[]`], 't.low = d.v0 AND t.high = d.v1')})`);
    }
    const gQty = gone('quantity');
    if (gQty.length) {
      ctes.push(`g_qty AS (${removed('idx_quantity', gQty, [`${p(gQty.map((x) => x.row.value))}::numeric[]`, `${p(gQty.map((x) => x.row.system ?? null))}::text[]`, `${p(gQty.map((x) => x.row.code ?? null))}::text[]`], 't.value = d.v0 AND t.system IS NOT DISTINCT FROM d.v1 AND t.code IS NOT DISTINCT FROM d.v2')})`);
    }
    ctes.push(`ver AS (INSERT INTO resource_version (resource_type, id, version_id, last_updated, deleted, patient_key, content)
      SELECT t, i, v, lu, false, pk, c FROM src)`);
    // rows to insert: all of a new or rewritten resource's, only the added ones of a changed one
    const flat = <R>(pick: (x: IndexRows) => R[]) => written.flatMap((it) => pick(changes.get(it)?.added ?? it.index!).map((row) => ({ it, row })));
    const seqs = [inserts.length ? 'SELECT resource_type, id, seq FROM ins' : '', updates.length ? 'SELECT resource_type, id, seq FROM upd' : ''].filter(Boolean).join(' UNION ALL ');
    // the owner columns of every version by its position (`src.n`), with its resource's seq: an index row carries
    // only that number, not the type, id and patient key again (~240 index rows a message; they were half its bytes)
    if (written.length) ctes.push(`owners AS MATERIALIZED (SELECT u.n, u.t, u.i, u.pk, s.seq FROM src u JOIN (${seqs}) s ON s.resource_type = u.t AND s.id = u.i)`);
    /** the index rows of one table: `cols` after (resource_type, resource_id, param), then patient_key and the seq */
    const added = (table: string, xs: { it: BatchItem; row: { param: string } }[], names: string[], cols: string[]): string =>
      `INSERT INTO ${table} (resource_type, resource_id, param, ${names.join(', ')}, patient_key, resource_seq)
        SELECT o.t, o.i, x.p${cols.map((_, i) => `, x.v${i}`).join('')}, o.pk, o.seq
        FROM unnest(${p(xs.map((x) => position.get(x.it)))}::int[], ${p(xs.map((x) => x.row.param))}::text[], ${cols.join(', ')}) AS x(n, p${cols.map((_, i) => `, v${i}`).join('')})
        JOIN owners o USING (n)`;
    const token = flat((x) => x.token);
    if (token.length) ctes.push(`i_token AS (${added('idx_token', token, ['system', 'code'], [`${p(token.map((x) => x.row.system ?? null))}::text[]`, `${p(token.map((x) => x.row.code ?? null))}::text[]`])})`);
    const str = flat((x) => x.string);
    if (str.length) ctes.push(`i_string AS (${added('idx_string', str, ['value', 'exact'], [`${p(str.map((x) => x.row.value))}::text[]`, `${p(str.map((x) => x.row.exact))}::text[]`])})`);
    const ref = flat((x) => x.reference);
    if (ref.length) ctes.push(`i_ref AS (${added('idx_reference', ref, ['target_type', 'target_id'], [`${p(ref.map((x) => x.row.targetType))}::text[]`, `${p(ref.map((x) => x.row.targetId))}::text[]`])})`);
    const date = flat((x) => x.date);
    if (date.length) ctes.push(`i_date AS (${added('idx_date', date, ['low', 'high'], [`${p(date.map((x) => x.row.low))}::timestamptz[]`, `${p(date.map((x) => x.row.high))}::timestamptz[]`])})`);
    const qty = flat((x) => x.quantity);
    if (qty.length) {
      ctes.push(`i_qty AS (${added('idx_quantity', qty, ['value', 'system', 'code'], [`${p(qty.map((x) => x.row.value))}::numeric[]`, `${p(qty.map((x) => x.row.system ?? null))}::text[]`, `${p(qty.map((x) => x.row.code ?? null))}::text[]`])})`);
    }
    await this.tx.query(`WITH ${ctes.join(',\n')} SELECT 1`, params);
  }

  /** Every index row of the resource with this seq, from every table in one statement. */
  private async deleteIndex(seq: string): Promise<void> {
    await this.tx.query(`WITH ${INDEX_TABLES.map((t) => `del_${t} AS (DELETE FROM ${t} WHERE resource_seq = $1::bigint)`).join(', ')} SELECT 1`, [seq]);
  }

}

/**
 * A PostgreSQL array literal (`{"a",NULL,"b"}`) of strings and numbers, every string quoted. Built here because
 * the driver's own conversion escapes each element with two regular-expression replacements, and a batch sends
 * thousands of elements (index rows).
 */
export function arrayLiteral(values: unknown[]): string {
  // Usually JSON's own array text is already a valid literal: PostgreSQL reads `"…"`, `\"`, `\\` and an unquoted
  // `null` the same way. Not when JSON had to write another escape (a control character: `\n`, `\u0001`), which
  // PostgreSQL would read as a plain letter, or a number JSON cannot write (NaN): then element by element.
  let plain = true;
  for (let i = 0; i < values.length && plain; i++) {
    const v = values[i];
    if (typeof v === 'number' ? !Number.isFinite(v) : v !== null && v !== undefined && typeof v !== 'string') plain = false;
  }
  if (plain) {
    const json = JSON.stringify(values);
    if (!JSON_OTHER_ESCAPE.test(json)) return `{${json.slice(1, -1)}}`;
  }
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ',';
    const v = values[i];
    if (v === null || v === undefined) out += 'NULL';
    else if (typeof v === 'number') out += String(v);
    else {
      const text = String(v);
      out += NEEDS_ESCAPE.test(text) ? `"${text.replace(ESCAPED, '\\$&')}"` : `"${text}"`;
    }
  }
  return out + '}';
}
/** an escape other than \" and \\ in JSON text (a false alarm, e.g. an escaped backslash before an n, only costs time) */
const JSON_OTHER_ESCAPE = /\\[bfnrtu]/;
const NEEDS_ESCAPE = /[\\"]/;
const ESCAPED = /[\\"]/g;

/** A row of a search page: the stored text, its seq (for the cursor), its type and id. */
type PageRow = { content: string; seq: string; rt: string; rid: string };

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
