/**
 * One person, one Patient, whichever route names them first. A person is found by the identifiers other sources
 * already stored for them: the isikukood first, then a hospital's own record number (PID-3 MR, system
 * `https://fhir.ee/sid/pid/est/prn/{registry code}`); other identifiers say nothing about identity. A contribution
 * whose Patient is not stored under the id it derived (a message carrying only the hospital's record number, a
 * Patient an earlier version of the gateway created with a random id) is turned onto the Patient that holds one of
 * its identifiers; the identifiers of both are kept together, so the next message with either one finds the person.
 *
 * Rules for FHIR clients (api/fhir.ts, ingest/fhir/bundle.ts):
 * - a create (POST, alone or in a Bundle) of a Patient whose isikukood (or other identity identifier) already has a
 *   Patient is applied to that Patient — as an update when the caller may change it, otherwise left as it is and
 *   answered with its location (200): never a second Patient;
 * - a PUT that would give an isikukood to a second Patient is refused (409) naming the Patient that holds it; a new
 *   Patient with an isikukood gets the id derived from it (a PUT to another id is refused, naming that id).
 */
import type { Identifier, Patient, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../store/db.js';
import { canonicalSystem, deterministicId, maskIsikukood, SYSTEMS } from '../fhir/identifiers.js';
import { indexKey } from '../store/indexer.js';
import { OutcomeError } from '../fhir/outcome.js';
import type { Contribution } from '../county/contribution.js';

const IDENTITY: Record<string, string> = { Patient: SYSTEMS.isikukood, Practitioner: SYSTEMS.professional, Organization: SYSTEMS.organisation };

/**
 * The identifiers that name who a resource is, strongest first: its identity identifier (isikukood, professional
 * code, registry code), then, for a Patient, hospitals' record numbers. Other identifiers (a case number, a local
 * code) say nothing about identity.
 */
export function namingIdentifiers(r: Resource): { system: string; value: string }[] {
  const identity = IDENTITY[r.resourceType];
  const rank = (s: string) => (s === identity ? 0 : r.resourceType === 'Patient' && s.startsWith(SYSTEMS.patientRecordNumber + '/') ? 1 : 2);
  return ((r as { identifier?: Identifier[] }).identifier ?? [])
    .filter((i) => i.system && i.value)
    .map((i) => ({ system: canonicalSystem(i.system!), value: i.value! }))
    .filter((i) => rank(i.system) < 2)
    .sort((a, b) => rank(a.system) - rank(b.system));
}

/** The id derived from a resource's identity identifier (isikukood, professional code, registry code), if it has one. */
export function identityId(r: Resource): string | undefined {
  const system = IDENTITY[r.resourceType];
  const id = system ? namingIdentifiers(r).find((i) => i.system === system) : undefined;
  return id ? deterministicId(r.resourceType, system, id.value) : undefined;
}

/** For each identifier (`system|value`), the current resources of `type` that carry it. */
async function holders(q: Queryable, type: string, ids: { system: string; value: string }[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (ids.length === 0) return out;
  const rows = await q.query<{ resource_id: string; system: string; code: string }>(
    `SELECT DISTINCT t.resource_id, t.system, t.code FROM idx_token t
     JOIN resource r ON r.resource_type = t.resource_type AND r.id = t.resource_id AND NOT r.deleted
     WHERE t.resource_type = $1 AND t.param = 'identifier' AND (t.system, t.code) IN (SELECT * FROM unnest($2::text[], $3::text[]))
     ORDER BY t.resource_id`,
    [type, ids.map((i) => indexKey(i.system)), ids.map((i) => indexKey(i.value))],
  );
  for (const r of rows) {
    const k = `${r.system}|${r.code}`;
    out.set(k, [...(out.get(k) ?? []), r.resource_id]);
  }
  return out;
}

/** The identity identifier's value of a resource (its isikukood for a Patient), if any. */
function identityValue(r: Resource): string | undefined {
  const system = IDENTITY[r.resourceType];
  return system ? namingIdentifiers(r).find((i) => i.system === system)?.value : undefined;
}

/**
 * Of the stored resources that carry one of `r`'s identifiers, the one that is the same person (or organisation):
 * the holder of its identity identifier; else the holder of a weaker identifier (a hospital record number) that
 * names no other identity — two people with different isikukoods are never joined because a sender reused a
 * record number.
 */
async function holderOf(q: Queryable, r: Resource): Promise<{ id: string; stored: Resource } | undefined> {
  const ids = namingIdentifiers(r);
  if (ids.length === 0) return undefined;
  const found = await holders(q, r.resourceType, ids);
  const mine = identityValue(r);
  const candidates: string[] = [];
  for (const i of ids) for (const h of found.get(`${indexKey(i.system)}|${indexKey(i.value)}`) ?? []) if (!candidates.includes(h)) candidates.push(h);
  if (candidates.length === 0) return undefined;
  const rows = await q.query<{ id: string; content: string }>(`SELECT id, content FROM resource WHERE resource_type = $1 AND id = ANY($2::text[])`, [r.resourceType, candidates]);
  const stored = new Map(rows.map((x) => [x.id, JSON.parse(x.content) as Resource]));
  // candidates come in the order of `r`'s identifiers, strongest first
  for (const c of candidates) {
    const held = stored.get(c);
    const theirs = held && identityValue(held);
    if (held && (!theirs || !mine || theirs === mine)) return { id: c, stored: held };
  }
  return undefined;
}

/**
 * The stored resource of `r`'s type (Patient, Practitioner, Organization) that is the one `r` names, if any (its own
 * id when it holds them itself).
 */
export async function identityHolder(q: Queryable, r: Resource): Promise<string | undefined> {
  if (!IDENTITY[r.resourceType]) return undefined;
  if (r.id) {
    const own = await q.query<{ id: string }>(`SELECT id FROM resource WHERE resource_type = $1 AND id = $2 AND NOT deleted`, [r.resourceType, r.id]);
    if (own.length) return r.id;
  }
  return (await holderOf(q, r))?.id;
}

/**
 * A Patient written through the FHIR API under `id` must not give its isikukood to a second Patient: 409 naming
 * the Patient that holds it, or the id a new Patient with that isikukood gets.
 */
export async function assertOnePatient(q: Queryable, r: Resource, id: string): Promise<void> {
  if (r.resourceType !== 'Patient') return;
  const ni = namingIdentifiers(r).find((i) => i.system === SYSTEMS.isikukood);
  if (!ni) return;
  const found = (await holders(q, 'Patient', [ni])).get(`${indexKey(ni.system)}|${indexKey(ni.value)}`) ?? [];
  if (found.includes(id)) return;
  if (found.length) throw new OutcomeError('conflict', `this isikukood belongs to Patient/${found[0]}: one person is one Patient (write to Patient/${found[0]})`, 'Patient.identifier');
  const derived = deterministicId('Patient', SYSTEMS.isikukood, ni.value);
  if (id !== derived) throw new OutcomeError('conflict', `a Patient with an isikukood has the id derived from it: Patient/${derived}`, 'Patient.id');
}

/** Every `Patient/{from}` reference in a value, deep, turned to `Patient/{to}`. */
function repoint<T>(v: T, from: string, to: string): T {
  if (Array.isArray(v)) return v.map((x) => repoint(x, from, to)) as T;
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === 'reference' && typeof x === 'string' && (x === from || x.startsWith(from + '/')) ? to + x.slice(from.length) : repoint(x, from, to);
    return out as T;
  }
  return v;
}

/**
 * Turns each contribution onto the Patient that already holds its person's identifiers (`holderOf`), when the
 * Patient it derived is not stored. One statement for the batch when every Patient is stored already.
 */
export async function resolvePeople(q: Queryable, cs: Contribution[]): Promise<Contribution[]> {
  if (cs.length === 0) return cs;
  const wanted = [...new Set(cs.map((c) => c.patient.id!))];
  const stored = new Set(
    (await q.query<{ id: string }>(`SELECT id FROM resource WHERE resource_type = 'Patient' AND NOT deleted AND id = ANY($1::text[])`, [wanted])).map((r) => r.id),
  );
  const out: Contribution[] = [];
  for (const c of cs) {
    const from = c.patient.id!;
    const holder = stored.has(from) ? undefined : await holderOf(q, c.patient);
    if (!holder || holder.id === from) {
      out.push(c);
      continue;
    }
    const to = holder.id;
    const moved = repoint(c, `Patient/${from}`, `Patient/${to}`);
    // the identifiers of both, so the next message with either one finds the person
    const known = (holder.stored as Patient).identifier ?? [];
    const incoming = moved.patient.identifier ?? [];
    const key = (i: Identifier) => `${i.system ? canonicalSystem(i.system) : ''}|${i.value ?? ''}`;
    const identifier = [...incoming, ...known.filter((k) => !incoming.some((i) => key(i) === key(k)))];
    out.push({ ...moved, patient: { ...moved.patient, id: to, identifier } });
  }
  return out;
}

/** A person stored as more than one Patient: the Patients sharing one isikukood (shown masked: never in full). */
export interface Duplicate {
  isikukood: string;
  patients: string[];
  /** the Patient the others are merged into: the one whose id is derived from the isikukood, else the first */
  survivor: string;
}


/** Every isikukood held by more than one current Patient (stores written before identity was enforced on every route). */
export async function findDuplicates(q: Queryable): Promise<Duplicate[]> {
  const rows = await q.query<{ code: string; ids: string[] }>(
    `SELECT t.code, array_agg(DISTINCT t.resource_id ORDER BY t.resource_id) AS ids FROM idx_token t
     JOIN resource r ON r.resource_type = 'Patient' AND r.id = t.resource_id AND NOT r.deleted
     WHERE t.resource_type = 'Patient' AND t.param = 'identifier' AND t.system = $1
     GROUP BY t.code HAVING count(DISTINCT t.resource_id) > 1 ORDER BY t.code`,
    [SYSTEMS.isikukood],
  );
  return rows.map((r) => ({ isikukood: maskIsikukood(r.code), patients: r.ids, survivor: survivorOf(r.ids, r.code) }));
}

/**
 * The merge a duplicate asks for, as an HL7 v2 A40 would make it: the survivor is the Patient whose id is derived
 * from the isikukood when there is one, else the oldest; the retired one is kept, inactive, `replaced-by` the survivor.
 */
export async function duplicateMerge(q: Queryable, survivorId: string, retiredId: string, inboxId: string): Promise<Contribution> {
  const rows = await q.query<{ id: string; content: string }>(`SELECT id, content FROM resource WHERE resource_type = 'Patient' AND NOT deleted AND id = ANY($1::text[])`, [[survivorId, retiredId]]);
  const byId = new Map(rows.map((r) => [r.id, JSON.parse(r.content) as Patient]));
  const survivor = byId.get(survivorId);
  const retired = byId.get(retiredId);
  if (!survivor || !retired || survivorId === retiredId) throw new OutcomeError('invalid', 'a merge needs two different current Patients');
  const ni = (p: Patient) => namingIdentifiers(p).find((i) => i.system === SYSTEMS.isikukood)?.value;
  if (!ni(survivor) || ni(survivor) !== ni(retired)) throw new OutcomeError('invalid', 'only Patients with the same isikukood are merged here (other merges come as HL7 v2 A40 from the hospital)');
  const { meta: _m, ...rest } = retired;
  const key = (i: Identifier) => `${i.system ? canonicalSystem(i.system) : ''}|${i.value ?? ''}`;
  const identifier = [...(survivor.identifier ?? []), ...(retired.identifier ?? []).filter((i) => !(survivor.identifier ?? []).some((x) => key(x) === key(i)))];
  return {
    channel: 'fhir',
    inboxId,
    description: `duplicate Patient/${retiredId} merged into Patient/${survivorId} (admin)`,
    patient: { ...survivor, identifier },
    resources: [{ ...rest, active: false, link: [{ other: { reference: `Patient/${survivorId}` }, type: 'replaced-by' }] } as Patient],
    event: 'merge',
    merge: { retiredPatientId: retiredId },
  };
}

/** Which of a duplicate's Patients survives: the one whose id is derived from the isikukood, else the first. */
function survivorOf(patients: string[], isikukood: string): string {
  const derived = deterministicId('Patient', SYSTEMS.isikukood, isikukood);
  return patients.find((p) => p === derived) ?? patients[0];
}
