/**
 * Writes and reads inside one transaction (`Writer`): create, update (set-based, a batch of resources in a handful of
 * statements), delete, read, search and conditional matching — written once over `Db`, so PGlite and PostgreSQL
 * behave the same. Conditional create is built from search and an advisory lock inside the write's own transaction,
 * which makes it race-safe on both backends. A Writer with a guard acts for a caller (store/guard.ts).
 *
 * Longer than most files here because `writeBatch`, the one statement that writes a batch, and the checks before
 * it belong together: the order of locking, reading and checking is the correctness argument.
 *
 * @see https://hl7.org/fhir/R4/http.html (create, read, vread, update, delete, conditional create)
 * @see https://hl7.org/fhir/R4/resource.html#Meta (versionId and lastUpdated are assigned by the server)
 */
import crypto from 'node:crypto';
import type { Resource } from '../fhir/types.js';
import { OutcomeError, notFound } from '../fhir/outcome.js';
import type { Queryable } from './db.js';
import { buildSearch, cursorAfter, type SearchRequest, type SearchResult, parseSearchQuery } from './search.js';
import { parseStored, textOnly } from './stored.js';
import { indexRows, noIndexRows, type IndexRows } from './indexer.js';
import { referenceParamsTo } from '../fhir/searchparams.js';
import { includeSql, MAX_INCLUDED, parseIncludes, resolveIncludes, type IncludedRow } from './include.js';
import type { Guard } from './guard.js';
import { arrayLiteral, sameContent } from './content.js';
import { INDEX_TABLES, indexChange, rowsOf, sameRow, valueOf, type Kind } from './index-tables.js';

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

/** A row of a search page: the stored text, its seq (for the cursor), its type and id. */
type PageRow = { content: string; seq: string; rt: string; rid: string };

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
   * Locks the keys of several conditional writes at once (a transaction Bundle's), so that two transactions naming
   * the same resources in different orders take them in one sorted round instead of one by one (a deadlock).
   */
  async lockConditionals(criteria: [resourceType: string, criteria: string][]): Promise<void> {
    const keys = criteria.flatMap(([type, c]) => {
      try {
        const query = parseSearchQuery(c.replace(/^\?/, ''));
        return query.length ? [conditionalKey(type, query)] : [];
      } catch {
        return []; // the entry's own conditional match reports it, naming the entry
      }
    });
    await this.lockKeys(keys);
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

  /** create (POST): the server assigns a new id, whatever the resource says (mappings with deterministic ids `update`). */
  async create<T extends Resource>(resource: T, opts: { ifNoneExist?: string } = {}): Promise<WriteResult<T>> {
    if (opts.ifNoneExist !== undefined) {
      const found = await this.conditionalMatch(resource.resourceType, opts.ifNoneExist);
      if (found) return { resource: (await this.shown(found)) as T, outcome: 'existing' };
    }
    return (await this.insertNew([{ ...resource, id: crypto.randomUUID() }]))[0] as WriteResult<T>;
  }

  /**
   * Resources whose ids the server has just made (random UUIDs: a create, an AuditEvent): there is no current version
   * to read or lock, so they are checked (rights, then validity) and inserted as version 1 in one statement.
   */
  async insertNew(resources: Resource[]): Promise<WriteResult[]> {
    for (const r of resources) {
      if (this.guard) await this.guard.write(undefined, r, this.tx, false);
      this.opts.validate?.(r);
    }
    const lastUpdated = new Date().toISOString();
    const inserts: BatchItem[] = resources.map((r) => {
      const stored = { ...r, meta: { ...r.meta, versionId: '1', lastUpdated } } as Resource;
      const index = indexRows(stored);
      return { r: stored, content: JSON.stringify(stored), patientKey: index.patientKey, index };
    });
    if (inserts.length) await this.writeBatch(inserts, []);
    return inserts.map((it) => ({ resource: it.r, outcome: 'created' as const }));
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
    await this.lockKeys([conditionalKey(resourceType, query)]);
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
      for (const { table } of INDEX_TABLES) ctes.push(`del_${table} AS (DELETE FROM ${table} WHERE resource_seq IN (${rewrittenSeqs}))`);
    }
    const owner = (xs: { it: BatchItem }[]) => `${p(xs.map((x) => x.it.r.resourceType))}::text[], ${p(xs.map((x) => x.it.r.id))}::text[]`;
    const gone = (kind: Kind) => [...changes].flatMap(([it, c]) => rowsOf(c.removed, kind).map((row) => ({ it, row })));
    /** removed rows of changed resources: `cols` are the row's values after its param, compared by `match` (d.v0, d.v1, …) */
    const removed = (table: string, xs: { it: BatchItem; row: { param: string } }[], cols: string[], match: string): string =>
      `DELETE FROM ${table} t USING unnest(${owner(xs)}, ${p(xs.map((x) => x.row.param))}::text[], ${cols.join(', ')}) AS d(rt, ri, p${cols.map((_, i) => `, v${i}`).join('')})
        JOIN resource o ON o.resource_type = d.rt AND o.id = d.ri
        WHERE t.resource_seq = o.seq AND t.param = d.p AND ${match}`;
    for (const t of INDEX_TABLES) {
      const xs = gone(t.kind);
      if (xs.length) ctes.push(`g_${t.kind} AS (${removed(t.table, xs, t.cols.map((c) => `${p(xs.map((x) => valueOf(c, x.row)))}::${c.type}[]`), sameRow(t))})`);
    }
    ctes.push(`ver AS (INSERT INTO resource_version (resource_type, id, version_id, last_updated, deleted, patient_key, content)
      SELECT t, i, v, lu, false, pk, c FROM src)`);
    // rows to insert: all of a new or rewritten resource's, only the added ones of a changed one
    const flat = (kind: Kind) => written.flatMap((it) => rowsOf(changes.get(it)?.added ?? it.index!, kind).map((row) => ({ it, row })));
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
    for (const t of INDEX_TABLES) {
      const xs = flat(t.kind);
      if (xs.length) ctes.push(`i_${t.kind} AS (${added(t.table, xs, t.cols.map((c) => c.name), t.cols.map((c) => `${p(xs.map((x) => valueOf(c, x.row)))}::${c.type}[]`))})`);
    }
    await this.tx.query(`WITH ${ctes.join(',\n')} SELECT 1`, params);
  }

  /** Every index row of the resource with this seq, from every table in one statement. */
  private async deleteIndex(seq: string): Promise<void> {
    await this.tx.query(`WITH ${INDEX_TABLES.map(({ table }) => `del_${table} AS (DELETE FROM ${table} WHERE resource_seq = $1::bigint)`).join(', ')} SELECT 1`, [seq]);
  }

}

/** The advisory-lock key of a conditional write: its type and its criteria in a canonical order. */
function conditionalKey(resourceType: string, query: [string, string][]): string {
  return `cond|${resourceType}|${query
    .map(([k, v]) => `${k}=${v}`)
    .sort()
    .join('&')}`;
}
