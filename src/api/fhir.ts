/**
 * FHIR R4 REST without transport: `handle(request) → response`. The HTTP server is a thin adapter around it;
 * every interaction converts errors in one place (`errorResponse`).
 *
 * Longer than most files here: the interaction table (`route`) and one short handler per interaction; the access
 * policy is auth/access.ts, Bundle execution ingest/fhir/bundle.ts.
 *
 * @see https://hl7.org/fhir/R4/http.html
 */
import type { Bundle, BundleEntry, OperationOutcome, Resource } from '../fhir/types.js';
import { asQueryError, OutcomeError, toOutcomeError, CATEGORIES, informational } from '../fhir/outcome.js';
import { isResourceType } from '../fhir/definitions.js';
import type { Store } from '../store/index.js';
import type { CallerRepository, HistoryEntry } from '../store/repository.js';
import type { WriteResult } from '../store/writer.js';
import { capabilityStatement } from './capability.js';
import { reshapes, shaper } from './shape.js';
import { storedText } from '../store/stored.js';
import { processBundle, processMessage, type Submission } from '../ingest/fhir/process.js';
import { checkResource } from '../write-checks.js';
import { applyToHolder, checkReferencesExist, resolveMunicipalities } from '../ingest/fhir/bundle.js';
import { assertOnePatient, identityHolder, identityId } from '../careplan/identity.js';
import crypto from 'node:crypto';
import type { Logger } from '../log.js';
import { Access } from '../auth/access.js';
import type { Principal } from '../auth/jwt.js';
import { recordAudit, type AuditInput } from '../auth/audit.js';
import type { Security } from '../auth/security.js';
import { checkJsonCharset, parseJsonBody, type JsonLimits } from '../fhir/json.js';

export interface FhirRequest {
  method: string;
  /** path below the FHIR base, e.g. `/Patient/123/_history/2` */
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | undefined>;
  body?: Buffer;
  /** who is calling (client id from the token, or `anonymous`) */
  caller?: string;
  remoteAddress?: string;
  /** the authenticated caller and their per-request access decision (when authentication is on) */
  principal?: Principal;
  access?: Access;
  /** what the audit trail records about this request (filled as it runs) */
  audit?: { interaction: AuditInput['interaction']; patients: Set<string>; what: string[] };
  /** the store as this caller may see it: every read and write of the request goes through it */
  repo?: CallerRepository;
  /** the body parsed within its bounds (or why it could not be), once */
  parsed?: { value?: unknown; error?: unknown };
}

export interface FhirResponse {
  status: number;
  headers: Record<string, string>;
  /** JSON text */
  body?: string;
  /** the people a non-FHIR call touched, for its AuditEvent (never sent) */
  auditPatients?: string[];
}

export interface FhirApiOptions {
  baseUrl: string;
  defaultPageSize: number;
  maxPageSize: number;
  logger: Logger;
  /** bearer authentication, org-scoped access and the audit trail; undefined = open (loopback trial) */
  security?: Security;
  /** bounds on request bodies (fhir/json.ts) */
  jsonLimits?: JsonLimits;
}

const JSON_TYPE = 'application/fhir+json; charset=utf-8';

export class FhirApi {
  constructor(
    private readonly store: Store,
    private readonly opts: FhirApiOptions,
  ) {}

  async handle(req: FhirRequest): Promise<FhirResponse> {
    const security = this.opts.security;
    const open = req.method === 'GET' && req.path.replace(/\/+$/, '') === '/metadata';
    if (!security || open) {
      try {
        req.repo = this.store.repo.as(undefined);
        return await this.route(req);
      } catch (err) {
        return this.errorResponse(err);
      }
    }
    req.audit = { interaction: interactionOf(req), patients: new Set(), what: [] };
    let res: FhirResponse;
    try {
      req.principal ??= await security.authenticate(req.headers, req.remoteAddress);
      req.caller = req.principal.clientId || req.principal.organization;
      req.access = new Access(this.store.db, req.principal);
      req.repo = this.store.repo.as(req.access);
      res = await this.route(req);
    } catch (err) {
      res = this.errorResponse(err);
    }
    // refused at authentication: counted per address and minute (auth/security.ts), not one AuditEvent each
    if (!req.principal) return res;
    // every authenticated request is audited, refusals too (after its work is committed, before the answer
    // leaves); every person whose data the request read or wrote is named, whichever path reached it
    for (const p of req.access?.touched ?? []) req.audit.patients.add(p);
    for (const o of req.access?.objects ?? []) req.audit.what.push(o);
    try {
      await recordAudit(this.store, {
        interaction: req.audit.interaction,
        outcome: res.status < 400 ? '0' : res.status < 500 ? '4' : '8',
        outcomeDesc: res.status >= 400 ? `HTTP ${res.status}` : undefined,
        principal: req.principal,
        query: req.method === 'GET' && req.query.size ? `${req.path}?${req.query.toString()}` : req.path,
        patients: [...req.audit.patients],
        what: [...new Set(req.audit.what)].slice(0, 1000),
        disclosures: req.access ? [...req.access.disclosures.values()] : [],
        address: req.remoteAddress,
      });
    } catch (e) {
      // fail closed: what cannot be audited is not disclosed
      this.opts.logger.error('audit write failed', { error: e instanceof Error ? e.message : String(e) });
      return this.errorResponse(new OutcomeError('fault', 'the request could not be recorded in the audit trail, so nothing is disclosed; try again'));
    }
    return res;
  }

  /** The store as this request's caller may see it (set by handle). */
  private repo(req: FhirRequest): CallerRepository {
    return req.repo ?? this.store.repo.as(req.access);
  }

  /** Errors in a query's values are bad requests (400), not unprocessable content. */
  private async asQuery(p: Promise<FhirResponse>): Promise<FhirResponse> {
    try {
      return await p;
    } catch (err) {
      throw asQueryError(err);
    }
  }

  /** AuditEvent is written by the server only; AuditEvent and Provenance are never changed or deleted. */
  private appendOnly(type: string, method: string): void {
    if (type === 'AuditEvent' && method !== 'GET') throw new OutcomeError('not-allowed', 'AuditEvent is written by the server only and cannot be created, changed or deleted');
    if (type === 'Provenance' && (method === 'PUT' || method === 'DELETE' || method === 'PATCH')) throw new OutcomeError('not-allowed', 'Provenance cannot be changed or deleted');
  }

  errorResponse(err: unknown): FhirResponse {
    const e = toOutcomeError(err);
    if (e.category === 'fault') this.opts.logger.error('fhir request failed', { error: err instanceof Error ? err.message : String(err) });
    return json(CATEGORIES[e.category].http, e.outcome);
  }

  private async route(req: FhirRequest): Promise<FhirResponse> {
    const parts = req.path.split('/').filter(Boolean).map(decodeURIComponent);
    const m = req.method.toUpperCase();
    if (parts.length === 0 && m === 'POST') {
      this.checkContentType(req);
      return json(200, await processBundle(this.store, this.submission(req)));
    }
    if (parts.length === 1 && parts[0] === '$process-message' && m === 'POST') {
      this.checkContentType(req);
      return json(200, await processMessage(this.store, this.submission(req)));
    }
    if (parts.length === 0) throw new OutcomeError('unsupported', `${m} on the FHIR base is not supported; POST a transaction or batch Bundle`);
    if (parts[0] === 'metadata' && parts.length === 1 && m === 'GET') {
      return json(200, capabilityStatement(this.opts.baseUrl));
    }
    if (parts[0] === '_history' && parts.length === 1 && m === 'GET') return this.asQuery(this.history(req));
    const type = parts[0];
    if (!isResourceType(type)) throw new OutcomeError('not-found', `"${type}" is not a FHIR R4 resource type`, 'url');
    const rest = parts.slice(1);
    this.appendOnly(type, m);

    if (rest.length === 0) {
      if (m === 'GET') return this.asQuery(this.search(type, req.query, req));
      if (m === 'POST') return this.create(type, req);
      if (m === 'PUT' && req.query.size > 0) return this.conditionalUpdate(type, req);
    } else if (rest.length === 1 && rest[0] === '_search' && m === 'POST') {
      const form = new URLSearchParams(req.body?.toString('utf8') ?? '');
      for (const [k, v] of req.query) form.append(k, v);
      return this.asQuery(this.search(type, form, req));
    } else if ((rest.length === 1 && rest[0] === '$validate') || (rest.length === 2 && rest[1] === '$validate')) {
      if (m !== 'POST') throw new OutcomeError('unsupported', '$validate takes POST with the resource (or Parameters) in the body');
      return this.validate(type, req, rest.length === 2 ? rest[0] : undefined);
    } else if (rest.length === 1 && rest[0] === '_history' && m === 'GET') {
      return this.asQuery(this.history(req, type));
    } else if (rest.length === 1) {
      const id = rest[0];
      if (m === 'GET') return this.read(type, id, req);
      if (m === 'PUT') return this.update(type, id, req);
      if (m === 'DELETE') return this.delete(type, id, req);
    } else if (type === 'Patient' && rest.length === 2 && rest[1] === '$everything' && m === 'GET') {
      return this.asQuery(this.everything(rest[0], req));
    } else if (rest.length === 2 && rest[1] === '_history' && m === 'GET') {
      return this.asQuery(this.history(req, type, rest[0]));
    } else if (rest.length === 3 && rest[1] === '_history' && m === 'GET') {
      const r = await this.repo(req).vread(type, rest[0], rest[2]);
      return json(200, r, versionHeaders(r));
    }
    throw new OutcomeError('unsupported', `${m} /${parts.join('/')} is not a supported FHIR interaction`);
  }

  /**
   * $validate (https://hl7.org/fhir/R4/resource-operation-validate.html): the checks every write runs — R4 schema,
   * base StructureDefinitions, the project profiles the resource claims or `profile` names — without storing.
   * The body is the resource, or Parameters with `resource` (and `profile`); the answer is always 200 with an
   * OperationOutcome, "All OK" when there are no issues.
   */
  private async validate(type: string, req: FhirRequest, id?: string): Promise<FhirResponse> {
    this.checkContentType(req);
    let body: Record<string, unknown> | undefined;
    if (req.body?.length) body = parseJsonBody(req.body, this.opts.jsonLimits) as Record<string, unknown>;
    const profiles = req.query.getAll('profile');
    let resource: unknown = body;
    if (body?.resourceType === 'Parameters') {
      const params = (body.parameter ?? []) as { name?: string; resource?: unknown; valueUri?: string; valueCanonical?: string }[];
      resource = params.find((p) => p.name === 'resource')?.resource;
      for (const p of params) if (p.name === 'profile' && (p.valueUri ?? p.valueCanonical)) profiles.push((p.valueUri ?? p.valueCanonical)!);
    }
    if (resource === undefined && id) resource = await this.repo(req).read(type, id);
    if (!resource || typeof resource !== 'object') throw new OutcomeError('invalid', '$validate needs a resource: the body, or Parameters.parameter[resource]', 'resource');
    const rt = (resource as { resourceType?: unknown }).resourceType;
    if (rt !== type) throw new OutcomeError('invalid', `resourceType is "${String(rt)}" but the URL names ${type}`, 'resourceType');
    const issues = checkResource(resource, profiles);
    return json(200, issues.length ? { resourceType: 'OperationOutcome', issue: issues } : informational('All OK'));
  }

  /**
   * Patient/$everything (https://hl7.org/fhir/R4/patient-operation-everything.html): the Patient and its
   * compartment, `_type`, `_since`, `_count`, paged with a cursor `next` link. Results pass the same per-request
   * access decision as search.
   */
  private async everything(id: string, req: FhirRequest): Promise<FhirResponse> {
    const count = pageSize(req.query.get('_count'), this.opts.defaultPageSize, this.opts.maxPageSize) || this.opts.defaultPageSize;
    const since = req.query.get('_since') ?? undefined;
    if (since !== undefined && Number.isNaN(Date.parse(since))) throw new OutcomeError('invalid', '_since must be an instant', '_since');
    const types = (req.query.get('_type') ?? '').split(',').filter(Boolean);
    for (const t of types) if (!isResourceType(t)) throw new OutcomeError('invalid', `_type: "${t}" is not a resource type`, '_type');
    // 403 / 404 / 410 for a patient the caller may not see, an unknown or a deleted one
    const { page, next: cursor } = await this.repo(req).everything(id, { types, since, count, cursor: req.query.get('_cursor') ?? undefined });
    const self = `${this.opts.baseUrl}/Patient/${id}/$everything${req.query.size ? '?' + req.query.toString() : ''}`;
    const link: Bundle['link'] = [{ relation: 'self', url: self }];
    if (cursor) {
      const next = new URLSearchParams(req.query);
      next.set('_cursor', cursor);
      next.set('_count', String(count));
      link.push({ relation: 'next', url: `${this.opts.baseUrl}/Patient/${id}/$everything?${next.toString()}` });
    }
    const entry = page.map((r) => ({ fullUrl: `${this.opts.baseUrl}/${r.resourceType}/${r.id}`, resource: r, search: { mode: 'match' as const } }));
    return json(200, { resourceType: 'Bundle', type: 'searchset', link, entry } satisfies Bundle);
  }

  /** read: the stored JSON text is served as is; ETag and If-None-Match (304). */
  private async read(type: string, id: string, req: FhirRequest): Promise<FhirResponse> {
    const raw = await this.repo(req).readRaw(type, id);
    const body = raw.content;
    const etag = `W/"${raw.versionId}"`;
    const headers = { ETag: etag, 'Last-Modified': new Date(raw.lastUpdated).toUTCString() };
    if (req.headers['if-none-match'] === etag) return { status: 304, headers };
    return { status: 200, headers: { 'Content-Type': JSON_TYPE, ...headers }, body };
  }

  private checkContentType(req: FhirRequest): void {
    const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (ct && ct !== 'application/fhir+json' && ct !== 'application/json') {
      throw new OutcomeError('unsupported', `Content-Type ${ct} is not supported; send application/fhir+json`, 'Content-Type');
    }
    checkJsonCharset(req.headers['content-type']);
  }

  private submission(req: FhirRequest): Submission {
    return { body: req.body ?? Buffer.alloc(0), contentType: req.headers['content-type'], caller: req.caller, baseUrl: this.opts.baseUrl, repo: this.repo(req), jsonLimits: this.opts.jsonLimits };
  }

  /** The body parsed within its bounds, once per request: the value, or the error that refuses it. */
  private parsed(req: FhirRequest): { value?: unknown; error?: unknown } {
    if (!req.parsed) {
      try {
        req.parsed = { value: parseJsonBody(req.body, this.opts.jsonLimits) };
      } catch (error) {
        req.parsed = { error };
      }
    }
    return req.parsed;
  }

  private parseBody(type: string, req: FhirRequest): Resource {
    this.checkContentType(req);
    const parsed = this.parsed(req);
    if (parsed.error) throw parsed.error;
    const body = parsed.value;
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new OutcomeError('structure', 'the body must be a JSON object (a FHIR resource)');
    const rt = (body as { resourceType?: unknown }).resourceType;
    if (rt !== type) throw new OutcomeError('invalid', `resourceType is "${String(rt)}" but the URL names ${type}`, 'resourceType');
    return body as Resource;
  }

  /**
   * Runs a write with the raw request stored in the inbox first (nothing received is lost, even a rejected
   * body), and the inbox entry finished in the same transaction as the write.
   */
  private async inboxed<T>(req: FhirRequest, work: () => Promise<{ result: T; produced: string[]; patientKey?: string | null }>): Promise<T> {
    // a body past the bounds is refused before any work is done with it, storing included (413: the sender keeps it)
    const parsed = this.parsed(req);
    if (parsed.error instanceof OutcomeError && parsed.error.category === 'too-large') throw parsed.error;
    const { entry } = await this.store.inbox.receive({
      channel: 'fhir',
      payload: req.body ?? Buffer.alloc(0),
      sender: req.caller ?? 'anonymous',
      contentType: req.headers['content-type'],
    });
    try {
      const { result, produced, patientKey } = await work();
      await this.store.inbox.finish(entry.id, { status: 'processed', produced, patientKey: patientKey ?? undefined });
      return result;
    } catch (err) {
      const e = toOutcomeError(err);
      await this.store.inbox
        .finish(entry.id, { status: e.category === 'fault' ? 'failed' : 'rejected', reason: e.message, outcome: e.outcome })
        .catch(() => undefined);
      throw err;
    }
  }

  private async create(type: string, req: FhirRequest): Promise<FhirResponse> {
    const res = await this.inboxed(req, async () => {
      const resource = this.parseBody(type, req);
      delete resource.id; // create ignores a client id (FHIR http.html#create)
      const r = await this.repo(req).transaction(async (w) => {
        await resolveMunicipalities(w, [{ resource }]);
        await checkReferencesExist(w, resource);
        const ifNoneExist = req.headers['if-none-exist'];
        if (ifNoneExist === undefined) {
          // one person, one Patient: a create for someone stored already is applied to them (careplan/identity.ts)
          const holder = await identityHolder(w.tx, resource);
          if (holder) return applyToHolder(w, resource, holder);
          const derived = identityId(resource);
          if (derived) return w.update({ ...resource, id: derived });
        }
        return w.create(resource, { ifNoneExist });
      });
      return { result: r, produced: [ref(r.resource)], patientKey: null };
    });
    return this.writeResponse(res, req);
  }

  private async update(type: string, id: string, req: FhirRequest): Promise<FhirResponse> {
    const ifMatch = parseIfMatch(req.headers['if-match']);
    const res = await this.inboxed(req, async () => {
      const resource = this.parseBody(type, req);
      if (resource.id !== undefined && resource.id !== id) {
        throw new OutcomeError('invalid', `Resource.id "${resource.id}" does not match the id in the URL "${id}"`, `${type}.id`);
      }
      const r = await this.repo(req).transaction(async (w) => {
        await resolveMunicipalities(w, [{ resource }]);
        await checkReferencesExist(w, { ...resource, id });
        await assertOnePatient(w.tx, resource, id);
        return w.update({ ...resource, id }, { ifMatch });
      });
      return { result: r, produced: [ref(r.resource)] };
    });
    return this.writeResponse(res, req);
  }

  /**
   * Conditional update, `PUT /fhir/Type?criteria` (https://hl7.org/fhir/R4/http.html#cond-update): no match →
   * create (with the body's id, or the id every source derives from an identity identifier); one match → update
   * it; several → 412. The criteria take an advisory lock, so concurrent conditional updates make one resource.
   */
  private async conditionalUpdate(type: string, req: FhirRequest): Promise<FhirResponse> {
    const res = await this.inboxed(req, async () => {
      const resource = this.parseBody(type, req);
      const r = await this.repo(req).transaction(async (w) => {
        const found = await w.conditionalMatch(type, req.query.toString());
        if (found && resource.id !== undefined && resource.id !== found.id) {
          throw new OutcomeError('invalid', `Resource.id "${resource.id}" is not the id of the resource the criteria match (${found.id})`, `${type}.id`);
        }
        const withId = { ...resource, id: found?.id ?? resource.id ?? (await identityHolder(w.tx, resource)) ?? identityId(resource) ?? crypto.randomUUID() };
        await checkReferencesExist(w, withId);
        await assertOnePatient(w.tx, withId, withId.id);
        return w.update(withId);
      });
      return { result: r, produced: [ref(r.resource)] };
    });
    return this.writeResponse(res, req);
  }

  private async delete(type: string, id: string, req: FhirRequest): Promise<FhirResponse> {
    await this.repo(req).delete(type, id);
    return json(200, informational(`${type}/${id} deleted`));
  }

  private writeResponse(res: WriteResult, req: FhirRequest): FhirResponse {
    const r = res.resource;
    const patient = Access.patientOf(r);
    if (patient) req.audit?.patients.add(patient); // the audit trail names whose data was written
    const status = res.outcome === 'created' ? 201 : 200;
    const headers: Record<string, string> = {
      ...versionHeaders(r),
      Location: `${this.opts.baseUrl}/${r.resourceType}/${r.id}/_history/${r.meta?.versionId}`,
    };
    const prefer = req.headers['prefer'] ?? '';
    if (/return=minimal/.test(prefer)) return { status, headers };
    if (/return=OperationOutcome/.test(prefer)) return json(status, informational(`${res.outcome} ${ref(r)}`), headers);
    return json(status, r, headers);
  }

  private async search(type: string, query: URLSearchParams, req: FhirRequest): Promise<FhirResponse> {
    const params: [string, string][] = [...query.entries()];
    const strict = /handling=strict/.test(req.headers['prefer'] ?? '');
    const shape = shaper(query);
    const self = `${this.opts.baseUrl}/${type}${query.size ? '?' + query.toString() : ''}`;
    const repo = this.repo(req);
    // a count over rows the caller may not see would leak them: only callers who see everyone get totals
    const counts = !repo.guard || repo.guard.seesAll;
    if (query.get('_summary') === 'count' && !counts) throw new OutcomeError('forbidden', '_summary=count is only for callers who may see every person', '_summary');
    if (query.get('_summary') === 'count') {
      const counted = await repo.search({ resourceType: type, params, count: 0, total: 'accurate', strict });
      return json(200, { resourceType: 'Bundle', type: 'searchset', total: counted.total, link: [{ relation: 'self', url: self }] } satisfies Bundle);
    }
    const count = pageSize(query.get('_count'), this.opts.defaultPageSize, this.opts.maxPageSize);
    const total = query.get('_total');
    if (total !== null && !['none', 'estimate', 'accurate'].includes(total)) throw new OutcomeError('invalid', '_total must be none, estimate or accurate', '_total');
    const result = await repo.search({
      resourceType: type,
      params,
      count,
      cursor: query.get('_cursor') ?? undefined,
      total: counts ? ((total ?? undefined) as 'none' | 'estimate' | 'accurate' | undefined) : undefined,
      strict,
      // nothing reads the matches but the Bundle writer: they stay the stored texts (no parse, no serialisation;
      // a guarded search always parses, the caller's policy needs the resources)
      textsOnly: !reshapes(query),
    });
    const link: Bundle['link'] = [{ relation: 'self', url: self }];
    if (result.nextCursor) {
      const next = new URLSearchParams(params.filter(([k]) => k !== '_cursor' && k !== '_count'));
      next.set('_count', String(count));
      next.set('_cursor', result.nextCursor);
      link.push({ relation: 'next', url: `${this.opts.baseUrl}/${type}?${next.toString()}` });
    }
    const entry: BundleEntry[] = [
      ...result.resources.map((r) => ({ fullUrl: `${this.opts.baseUrl}/${r.resourceType}/${r.id}`, resource: shape(r), search: { mode: 'match' as const } })),
      ...result.included.map((r) => ({ fullUrl: `${this.opts.baseUrl}/${r.resourceType}/${r.id}`, resource: shape(r), search: { mode: 'include' as const } })),
    ];
    if (result.issues.length) {
      const oo: OperationOutcome = { resourceType: 'OperationOutcome', issue: result.issues };
      entry.push({ resource: oo, search: { mode: 'outcome' } });
    }
    const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset', link, entry };
    if (result.total !== undefined) bundle.total = result.total;
    return { status: 200, headers: { 'Content-Type': JSON_TYPE }, body: bundleJson(bundle) };
  }

  private async history(req: FhirRequest, resourceType?: string, id?: string): Promise<FhirResponse> {
    const count = pageSize(req.query.get('_count'), this.opts.defaultPageSize, this.opts.maxPageSize);
    const since = req.query.get('_since') ?? undefined;
    const before = req.query.get('_before') ?? undefined;
    for (const [k, v] of [['_since', since], ['_before', before]] as const) {
      if (v !== undefined && Number.isNaN(Date.parse(v))) throw new OutcomeError('invalid', `${k} must be an instant`, k);
    }
    const cursor = req.query.get('_cursor') ?? undefined;
    const { entries, next: nextCursor } = await this.repo(req).history({ resourceType, id, since, before, cursor, count });
    const path = [resourceType, id, '_history'].filter(Boolean).join('/');
    const link: Bundle['link'] = [{ relation: 'self', url: `${this.opts.baseUrl}/${path}${req.query.size ? '?' + req.query.toString() : ''}` }];
    if (nextCursor) {
      const next = new URLSearchParams(req.query);
      next.set('_cursor', nextCursor);
      next.set('_count', String(count));
      link.push({ relation: 'next', url: `${this.opts.baseUrl}/${path}?${next.toString()}` });
    }
    const bundle: Bundle = {
      resourceType: 'Bundle',
      type: 'history',
      link,
      entry: entries.map((h) => historyEntry(h, this.opts.baseUrl)),
    };
    return json(200, bundle);
  }

}

function historyEntry(h: HistoryEntry, base: string): BundleEntry {
  const url = `${h.resourceType}/${h.id}`;
  return {
    fullUrl: `${base}/${url}`,
    resource: h.resource,
    request: { method: h.method, url: h.method === 'POST' ? h.resourceType : url },
    response: { status: h.deleted ? '204' : h.method === 'POST' ? '201' : '200', etag: `W/"${h.versionId}"`, lastModified: h.lastUpdated },
  };
}

function ref(r: Resource): string {
  return `${r.resourceType}/${r.id}/_history/${r.meta?.versionId}`;
}

function versionHeaders(r: Resource): Record<string, string> {
  const h: Record<string, string> = {};
  if (r.meta?.versionId) h.ETag = `W/"${r.meta.versionId}"`;
  if (r.meta?.lastUpdated) h['Last-Modified'] = new Date(r.meta.lastUpdated).toUTCString();
  return h;
}

function parseIfMatch(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const m = /^(?:W\/)?"?([^"]+)"?$/.exec(v.trim());
  if (!m) throw new OutcomeError('invalid', `If-Match "${v}" is not an ETag such as W/"3"`, 'If-Match');
  return m[1];
}

function pageSize(raw: string | null, dflt: number, max: number): number {
  if (raw === null) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new OutcomeError('invalid', `_count must be a non-negative integer`, '_count');
  return Math.min(n, max);
}

/**
 * A Bundle's JSON with each unchanged stored resource spliced in as the text it was stored as (store/stored.ts);
 * the same document JSON.stringify would give, without serialising the resources again.
 */
export function bundleJson(bundle: Bundle): string {
  const { entry, ...rest } = bundle;
  if (!entry?.length) return JSON.stringify(bundle);
  const parts = entry.map((e) => {
    const text = e.resource && storedText(e.resource);
    if (text === undefined) return JSON.stringify(e);
    const { resource: _, ...others } = e;
    const tail = JSON.stringify(others);
    return `{"resource":${text}${tail === '{}' ? '' : ',' + tail.slice(1, -1)}}`;
  });
  return `${JSON.stringify(rest).slice(0, -1)},"entry":[${parts.join(',')}]}`;
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): FhirResponse {
  return { status, headers: { 'Content-Type': JSON_TYPE, ...headers }, body: JSON.stringify(body) };
}

function interactionOf(req: FhirRequest): AuditInput['interaction'] {
  const parts = req.path.split('/').filter(Boolean);
  const m = req.method.toUpperCase();
  if (parts.some((p) => p.startsWith('$'))) return 'operation';
  if (parts.includes('_history')) return parts.length >= 4 ? 'vread' : 'history';
  if (m === 'GET') return parts.length >= 2 ? 'read' : 'search-type';
  if (m === 'POST') return parts.length === 0 ? 'transaction' : parts[1] === '_search' ? 'search-type' : 'create';
  if (m === 'PUT') return 'update';
  if (m === 'DELETE') return 'delete';
  return 'operation';
}
