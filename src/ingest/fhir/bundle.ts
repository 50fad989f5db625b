/**
 * `POST /fhir` with a `transaction` or `batch` Bundle (https://hl7.org/fhir/R4/http.html#transaction).
 *
 * transaction: one database transaction, all or nothing. Entries run in the order the specification gives
 * (DELETE, POST, PUT, GET); `urn:uuid:` / `urn:oid:` fullUrls (and absolute or relative URLs of resources in the
 * bundle) are resolved to the ids the server assigns, everywhere in the bundle; conditional create
 * (`ifNoneExist`) and conditional update (`PUT Type?criteria`) take the same advisory lock as single requests,
 * so two such transactions at once make one resource. A reference to a resource that neither exists nor is in
 * the bundle fails the transaction. Any failure names its entry (`Bundle.entry[3]…`) and leaves nothing behind.
 *
 * batch: each entry on its own (its own transaction), each with its own status or OperationOutcome.
 *
 * A created Patient, Practitioner or Organization with an identity identifier (isikukood, professional code,
 * registry code) gets the id every source derives from it, so "one Patient per isikukood" holds whichever
 * source comes first.
 */
import crypto from 'node:crypto';
import type { Bundle, BundleEntry, OperationOutcomeIssue, Resource } from '../../fhir/types.js';
import type { Organization } from '@medplum/fhirtypes';
import { OutcomeError, toOutcomeError, CATEGORIES } from '../../fhir/outcome.js';
import { isResourceType } from '../../fhir/definitions.js';
import type { Writer, WriteResult } from '../../store/writer.js';
import { isDeadlock } from '../../store/unit-of-work.js';
import { assertOnePatient, identityHolder, identityId } from '../../careplan/identity.js';
import { municipalities, municipalityOrganization } from '../../county/directory.js';
import { canonicalSystem, SYSTEMS } from '../../fhir/identifiers.js';

export { identityId };

export type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
const ORDER: Record<Method, number> = { DELETE: 0, POST: 1, PUT: 2, GET: 3 };

export interface PlannedEntry {
  index: number;
  method: Method;
  /** the request URL below the base: `Patient`, `Patient/123`, `Patient?identifier=…` */
  url: string;
  type: string;
  id?: string;
  /** `Type?criteria` of a conditional update/delete, or ifNoneExist of a conditional create */
  criteria?: string;
  ifMatch?: string;
  fullUrl?: string;
  resource?: Resource;
}

export interface EntryResult {
  index: number;
  response: NonNullable<BundleEntry['response']>;
  resource?: Resource;
  written?: Resource;
}

/** Reads and checks the shape of a transaction/batch Bundle; every problem names its entry. */
export function planBundle(body: unknown): { type: 'transaction' | 'batch'; entries: PlannedEntry[]; bundle: Bundle } {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new OutcomeError('structure', 'the body must be a JSON object (a Bundle)');
  const bundle = body as Bundle;
  if (bundle.resourceType !== 'Bundle') throw new OutcomeError('invalid', `POST to the FHIR base takes a Bundle, got resourceType "${String(bundle.resourceType)}"`, 'resourceType');
  if (bundle.type !== 'transaction' && bundle.type !== 'batch') {
    throw new OutcomeError('invalid', `Bundle.type must be transaction or batch here (message Bundles go to $process-message), got "${String(bundle.type)}"`, 'Bundle.type');
  }
  if (bundle.entry !== undefined && !Array.isArray(bundle.entry)) throw new OutcomeError('structure', 'Bundle.entry must be an array', 'Bundle.entry');
  const issues: OperationOutcomeIssue[] = [];
  const bad = (i: number, text: string, where = '') =>
    issues.push({ severity: 'error', code: 'invalid', diagnostics: `entry ${i}: ${text}`, expression: [`Bundle.entry[${i}]${where}`] });
  const entries: PlannedEntry[] = [];
  (bundle.entry ?? []).forEach((e, i) => {
    const method = e?.request?.method as Method | undefined;
    const url = (e?.request?.url ?? '').replace(/^\/+/, '');
    if (!method || !(method in ORDER)) return bad(i, `request.method must be GET, POST, PUT or DELETE`, '.request.method');
    if (!url) return bad(i, 'request.url is required', '.request.url');
    const [pathPart, query] = splitUrl(url);
    let segs: string[];
    try {
      // one canonical form before anything looks at it: no empty segments (a leading or trailing slash), escapes decoded
      segs = pathPart.split('/').filter(Boolean).map(decodeURIComponent);
    } catch {
      return bad(i, 'request.url has a malformed percent escape', '.request.url');
    }
    const type = segs[0];
    if (!isResourceType(type)) return bad(i, `"${type}" is not a FHIR R4 resource type`, '.request.url');
    const p: PlannedEntry = { index: i, method, url, type, fullUrl: e.fullUrl, resource: e.resource as Resource | undefined };
    if (method === 'POST' || method === 'PUT') {
      if (!p.resource || typeof p.resource !== 'object') return bad(i, `${method} needs a resource`, '.resource');
      if (p.resource.resourceType !== type) return bad(i, `resource is a ${String(p.resource.resourceType)} but request.url names ${type}`, '.resource.resourceType');
    }
    if (method === 'POST') {
      if (segs.length !== 1 || query) return bad(i, 'POST request.url is the resource type', '.request.url');
      p.criteria = e.request?.ifNoneExist;
    } else if (method === 'PUT' || method === 'DELETE') {
      if (segs.length === 2 && !query) p.id = segs[1];
      else if (segs.length === 1 && query) p.criteria = query;
      else return bad(i, `${method} request.url is Type/id or Type?criteria`, '.request.url');
      if (method === 'PUT' && p.id && p.resource!.id !== undefined && p.resource!.id !== p.id) {
        return bad(i, `resource.id "${p.resource!.id}" does not match request.url`, '.resource.id');
      }
    } else if (segs.length > 2) return bad(i, 'GET request.url is Type/id or Type?criteria', '.request.url');
    else if (segs.length === 2) p.id = segs[1];
    else p.criteria = query ?? '';
    if (e.request?.ifMatch) p.ifMatch = /^(?:W\/)?"?([^"]+)"?$/.exec(e.request.ifMatch.trim())?.[1];
    entries.push(p);
  });
  if (issues.length) throw OutcomeError.fromIssues('invalid', issues);
  return { type: bundle.type, entries, bundle };
}

function splitUrl(url: string): [string, string | undefined] {
  const q = url.indexOf('?');
  return q < 0 ? [url, undefined] : [url.slice(0, q), url.slice(q + 1)];
}

/** Every `reference` string in a resource (Reference datatypes, wherever they are nested). */
function eachReference(v: unknown, fn: (holder: { reference: string }) => void): void {
  if (Array.isArray(v)) for (const x of v) eachReference(x, fn);
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'reference' && typeof x === 'string') fn(v as { reference: string });
      else if (k !== 'contained') eachReference(x, fn);
    }
  }
}

/**
 * A create of a resource whose identity identifier (isikukood, professional code, registry code) or hospital record
 * number already names a stored one: applied to that one — as an update when the caller may change it, otherwise
 * left as it is and answered with its location (never a second resource for one person or organisation).
 */
export async function applyToHolder(w: Writer, r: Resource, id: string): Promise<WriteResult> {
  const current = await w.trusted().readOptional(r.resourceType, id);
  if (current && !(await w.mayChange(current))) return { resource: await w.shown(current), outcome: 'existing' };
  return w.update({ ...r, id });
}

/**
 * A single resource's references to other resources (`Type/id`) that do not exist: refused with the element
 * path, as in a transaction (contained `#id`, absolute URLs of other servers and logical identifiers are fine).
 */
export async function checkReferencesExist(w: Writer, r: Resource): Promise<void> {
  const wanted = new Set<string>();
  eachReference(r, (h) => {
    if (/^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}(\/_history\/[^/]+)?$/.test(h.reference)) wanted.add(h.reference.split('/_history/')[0]);
    else if (h.reference.startsWith('urn:uuid:') || h.reference.startsWith('urn:oid:')) {
      throw new OutcomeError('invalid', `reference ${h.reference} can only be resolved inside a transaction Bundle`);
    }
  });
  wanted.delete(`${r.resourceType}/${r.id}`);
  if (wanted.size === 0) return;
  const found = await w.exists([...wanted].map((k) => k.split('/') as [string, string]));
  const missing = [...wanted].filter((k) => !found.has(k));
  if (missing.length) {
    throw OutcomeError.fromIssues(
      'invalid',
      missing.map((k) => ({ severity: 'error', code: 'not-found', diagnostics: `the referenced ${k} does not exist`, expression: [r.resourceType] })),
    );
  }
}

/** Error at an entry: its issues re-anchored under `Bundle.entry[i]`. */
function atEntry(i: number, err: unknown): unknown {
  if (isDeadlock(err)) return err; // kept as it is, so the transaction is run again (retryDeadlocks)
  const e = toOutcomeError(err);
  if (e.category === 'fault') return e;
  const issue = e.outcome.issue.map((x) => ({
    ...x,
    diagnostics: `entry ${i}: ${x.diagnostics ?? x.details?.text ?? ''}`,
    expression: (x.expression?.length ? x.expression : ['']).map((p) => `Bundle.entry[${i}]${p ? `.resource.${p.replace(/^[A-Z][A-Za-z]+\./, '')}` : ''}`),
  }));
  return new OutcomeError(e.category, { resourceType: 'OperationOutcome', issue });
}

/**
 * Runs a transaction's entries inside the caller's database transaction. Returns results in entry order.
 * `baseUrl` lets absolute fullUrls of the server itself count as local references.
 */
export async function runTransaction(w: Writer, entries: PlannedEntry[], baseUrl: string): Promise<EntryResult[]> {
  const ids = new Map<string, string>(); // fullUrl (and its Type/id forms) → Type/newId
  const local = (u: string): string => (u.startsWith(baseUrl + '/') ? u.slice(baseUrl.length + 1) : u);

  // 1. Who is who: resolve the id every POST/PUT entry will have, so references can be rewritten first.
  const sorted = [...entries].sort((a, b) => ORDER[a.method] - ORDER[b.method] || a.index - b.index);
  // every conditional write's lock in one sorted round: one by one, two Bundles naming the same resources in other
  // orders would each hold one and wait for the other
  await w.lockConditionals(entries.flatMap((p) => (p.criteria ? [[p.type, p.criteria] as [string, string]] : [])));
  const existing = new Map<number, Resource>(); // conditional create that matched
  const held = new Set<number>(); // a create whose person (or organisation) is stored already
  for (const p of sorted) {
    try {
      if (p.method === 'POST') {
        if (p.criteria) {
          const found = await w.conditionalMatch(p.type, p.criteria);
          if (found) {
            existing.set(p.index, found);
            p.id = found.id;
          }
        }
        if (!p.id) {
          const holder = await identityHolder(w.tx, p.resource!);
          if (holder) {
            p.id = holder;
            held.add(p.index);
          }
        }
        p.id ??= identityId(p.resource!) ?? crypto.randomUUID();
      } else if (p.method === 'PUT' && p.criteria) {
        const found = await w.conditionalMatch(p.type, p.criteria);
        p.id = found?.id ?? p.resource!.id ?? (await identityHolder(w.tx, p.resource!)) ?? identityId(p.resource!) ?? crypto.randomUUID();
      } else if (p.method === 'DELETE' && p.criteria) {
        p.id = (await w.conditionalMatch(p.type, p.criteria))?.id;
      }
    } catch (err) {
      throw atEntry(p.index, err);
    }
    if ((p.method === 'POST' || p.method === 'PUT') && p.id) {
      const target = `${p.type}/${p.id}`;
      if (p.fullUrl) ids.set(local(p.fullUrl), target);
      if (p.resource!.id) ids.set(`${p.type}/${p.resource!.id}`, target);
    }
  }

  // 2. Rewrite references; collect the ones that must already exist.
  await resolveMunicipalities(w, entries);
  const inBundle = new Set([...entries].filter((p) => p.id && (p.method === 'POST' || p.method === 'PUT')).map((p) => `${p.type}/${p.id}`));
  const mustExist = new Map<string, number>();
  for (const p of entries) {
    if (!p.resource) continue;
    p.resource = structuredClone(p.resource);
    eachReference(p.resource, (h) => {
      const key = local(h.reference);
      const mapped = ids.get(key);
      if (mapped) h.reference = mapped;
      else if (h.reference.startsWith('urn:uuid:') || h.reference.startsWith('urn:oid:')) {
        throw atEntry(p.index, new OutcomeError('invalid', `reference ${h.reference} is not the fullUrl of any entry in this Bundle`));
      } else if (/^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}(\/_history\/[^/]+)?$/.test(key)) {
        h.reference = key;
        const target = key.split('/_history/')[0];
        if (!inBundle.has(target) && !mustExist.has(target)) mustExist.set(target, p.index);
      }
    });
  }
  if (mustExist.size) {
    const found = await w.exists([...mustExist.keys()].map((k) => k.split('/') as [string, string]));
    const missing = [...mustExist].filter(([k]) => !found.has(k));
    if (missing.length) {
      throw OutcomeError.fromIssues(
        'invalid',
        missing.map(([k, i]) => ({ severity: 'error', code: 'not-found', diagnostics: `entry ${i}: the referenced ${k} does not exist`, expression: [`Bundle.entry[${i}].resource`] })),
      );
    }
  }

  // 3. Run the entries in order.
  const results: EntryResult[] = [];
  for (const p of sorted) {
    try {
      results.push(await runEntry(w, p, existing.get(p.index), held.has(p.index)));
    } catch (err) {
      throw atEntry(p.index, err);
    }
  }
  return results.sort((a, b) => a.index - b.index);
}

/**
 * A reference that names a municipality only by its Business Register code (`{ identifier: { system: br, value } }`,
 * as referral senders write the referred-to social department) becomes a reference to the municipality's own
 * Organization (`Organization/ehak-XXXX`, made if it is not stored yet): its worklist (`Task?owner=…`) and its team
 * membership are found by that Organization.
 */
export async function resolveMunicipalities(w: Writer, entries: { resource?: Resource }[]): Promise<void> {
  const needed = new Map<string, Organization>();
  for (const p of entries) {
    if (!p.resource) continue;
    eachLogical(p.resource, (holder) => {
      const id = holder.identifier;
      if (!id?.value || !id.system || canonicalSystem(id.system) !== SYSTEMS.organisation) return;
      const m = [...municipalities().values()].find((x) => x.registryCode === id.value);
      if (!m) return;
      const org = municipalityOrganization(m);
      holder.reference = `Organization/${org.id}`;
      holder.display ??= m.name;
      needed.set(org.id!, org);
    });
  }
  if (needed.size === 0) return;
  const stored = await w.exists([...needed.keys()].map((id) => ['Organization', id] as [string, string]));
  const missing = [...needed.values()].filter((o) => !stored.has(`Organization/${o.id}`));
  if (missing.length) await w.trusted().updateMany(missing);
}

/** Every Reference without a `reference` but with an `identifier`, wherever it is nested. */
function eachLogical(v: unknown, fn: (holder: { reference?: string; display?: string; identifier: { system?: string; value?: string } }) => void): void {
  if (Array.isArray(v)) for (const x of v) eachLogical(x, fn);
  else if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (o.reference === undefined && !('resourceType' in o) && o.identifier && typeof o.identifier === 'object' && !Array.isArray(o.identifier) && ('type' in o || 'display' in o || Object.keys(o).length <= 3)) {
      fn(o as { identifier: { system?: string; value?: string } });
    }
    for (const [k, x] of Object.entries(o)) if (k !== 'contained' && k !== 'identifier') eachLogical(x, fn);
  }
}

/** One entry of a batch: its own reference check, then the same steps. */
export async function runBatchEntry(w: Writer, p: PlannedEntry, baseUrl: string): Promise<EntryResult> {
  return (await runTransaction(w, [p], baseUrl))[0];
}

async function runEntry(w: Writer, p: PlannedEntry, matched: Resource | undefined, held: boolean): Promise<EntryResult> {
  switch (p.method) {
    case 'DELETE': {
      if (!p.id) return { index: p.index, response: { status: '204 No Content' } };
      const d = await w.delete(p.type, p.id);
      return { index: p.index, response: { status: '204 No Content', ...(d.versionId ? { etag: `W/"${d.versionId}"` } : {}) } };
    }
    case 'POST': {
      if (matched) return done(p.index, { resource: await w.shown(matched), outcome: 'existing' });
      if (held) return done(p.index, await applyToHolder(w, p.resource!, p.id!));
      return done(p.index, await w.update({ ...p.resource!, id: p.id! }));
    }
    case 'PUT':
      await assertOnePatient(w.tx, p.resource!, p.id!);
      return done(p.index, await w.update({ ...p.resource!, id: p.id! }, { ifMatch: p.ifMatch }));
    case 'GET': {
      if (p.id) {
        const r = await w.read(p.type, p.id);
        return { index: p.index, response: { status: '200 OK', etag: `W/"${r.meta?.versionId}"` }, resource: r };
      }
      const res = await w.search({ resourceType: p.type, params: [...new URLSearchParams(p.criteria ?? '')], count: 100, strict: true });
      const set: Bundle = { resourceType: 'Bundle', type: 'searchset', entry: res.resources.map((r) => ({ resource: r, search: { mode: 'match' } })) };
      return { index: p.index, response: { status: '200 OK' }, resource: set };
    }
  }
}

function done(index: number, r: WriteResult): EntryResult {
  const v = r.resource.meta?.versionId;
  return {
    index,
    response: {
      status: r.outcome === 'created' ? '201 Created' : '200 OK',
      location: `${r.resource.resourceType}/${r.resource.id}/_history/${v}`,
      etag: `W/"${v}"`,
      lastModified: r.resource.meta?.lastUpdated,
    },
    resource: r.resource,
    written: r.outcome === 'created' || r.outcome === 'updated' ? r.resource : undefined,
  };
}

/** A failed batch entry's response: status line and OperationOutcome. */
export function failedEntry(index: number, err: unknown): EntryResult {
  const e = toOutcomeError(err);
  const status = CATEGORIES[e.category].http;
  return { index, response: { status: `${status}`, outcome: e.outcome } };
}
