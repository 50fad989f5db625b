/**
 * The audit trail: an AuditEvent (IHE Basic Audit Log Patterns: RESTful interaction, subtype, the organisation
 * and user, the patient) for every authenticated or refused request, so `GET /fhir/AuditEvent?patient=…` answers
 * "who looked at my data". AuditEvents are written by the server only, never changed or deleted through the API,
 * and hash-chained: each carries sha256(previous hash + its own content without the chain extension), serialised
 * by an advisory lock, so altering, removing or reordering a stored event is detected by `verifyAuditChain`.
 * An event is committed before the response is sent.
 *
 * @see https://profiles.ihe.net/ITI/BALP/, https://hl7.org/fhir/R4/auditevent.html
 */
import crypto from 'node:crypto';
import type { AuditEvent, Resource } from '@medplum/fhirtypes';
import type { Store } from '../store/index.js';
import { canonicalJson } from '../store/content.js';
import { indexRows } from '../store/indexer.js';
import type { Principal } from './jwt.js';
import type { Disclosure } from './access.js';

export const CHAIN_EXTENSION = 'https://care-gateway.ee/fhir/StructureDefinition/audit-chain';
const GENESIS = '0'.repeat(64);

export interface AuditInput {
  interaction: 'read' | 'vread' | 'search-type' | 'history' | 'create' | 'update' | 'delete' | 'transaction' | 'operation';
  outcome: '0' | '4' | '8';
  outcomeDesc?: string;
  principal?: Principal;
  /** the query or the resource addressed (no patient data beyond references) */
  query?: string;
  patients: string[];
  /** other resources addressed (Type/id) */
  what?: string[];
  address?: string;
  /** the caller when it has no token (an MLLP sender: MSH-3/4 and address) */
  sender?: string;
  /** data disclosed across sectors in this request, each with its legal basis */
  disclosures?: Disclosure[];
}

const ACTION: Record<AuditInput['interaction'], AuditEvent['action']> = {
  read: 'R',
  vread: 'R',
  'search-type': 'E',
  history: 'R',
  create: 'C',
  update: 'U',
  delete: 'D',
  transaction: 'E',
  operation: 'E',
};

function hashOf(prev: string, e: AuditEvent): string {
  const { extension: _x, meta: _m, ...rest } = e;
  return crypto.createHash('sha256').update(prev).update(canonicalJson(rest)).digest('hex');
}

/**
 * The key that signs the chain's head (AUDIT_KEY_FILE): kept outside the database, so someone who can rewrite the
 * database cannot make a rewritten chain verify. Set once at start (app.ts); undefined: the head is unsigned.
 */
let headKey: Buffer | undefined;
export function setAuditKey(key: Buffer | undefined): void {
  headKey = key;
}

function headMac(key: Buffer, length: number, hash: string): string {
  return crypto.createHmac('sha256', key).update(`audit-head:${length}:${hash}`).digest('hex');
}

export async function recordAudit(store: Store, a: AuditInput): Promise<void> {
  const now = new Date().toISOString();
  const event: AuditEvent = {
    resourceType: 'AuditEvent',
    id: crypto.randomUUID(),
    type: { system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest', display: 'RESTful Operation' },
    subtype: [{ system: 'http://hl7.org/fhir/restful-interaction', code: a.interaction }],
    action: ACTION[a.interaction],
    recorded: now,
    outcome: a.outcome,
    ...(a.disclosures?.length
      ? { purposeOfEvent: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActReason', code: 'COC', display: 'coordination of care' }] }] }
      : {}),
    ...(a.outcomeDesc ? { outcomeDesc: a.outcomeDesc } : {}),
    agent: [
      {
        type: { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110153', display: 'Source Role ID' }] },
        who: a.principal
          ? { identifier: { system: 'https://fhir.ee/sid/org/est/br', value: a.principal.organization }, display: `${a.principal.kind} ${a.principal.organization}${a.principal.clientId ? ` (client ${a.principal.clientId})` : ''}` }
          : { display: a.sender ?? 'unauthenticated caller' },
        requestor: true,
        ...(a.address ? { network: { address: a.address, type: '2' as const } } : {}),
      },
      ...(a.principal?.user ? [{ who: { display: a.principal.user }, requestor: false }] : []),
    ],
    source: { site: 'care-gateway', observer: { display: 'care-gateway' }, type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }] },
    entity: [
      ...a.patients.map((p) => ({ what: { reference: `Patient/${p}` }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' }, role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' } })),
      ...(a.what ?? []).map((w) => ({ what: { reference: w }, type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2', display: 'System Object' } })),
      ...(a.disclosures ?? []).map((d) => ({
        what: { reference: `Patient/${d.patient}` },
        type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '1', display: 'Person' },
        role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1', display: 'Patient' },
        description: `${d.dataClass} data disclosed across sectors`,
        detail: [
          { type: 'data-class', valueString: d.dataClass },
          { type: 'legal-basis', valueString: d.basis },
        ],
      })),
      ...(a.query ? [{ type: { system: 'http://terminology.hl7.org/CodeSystem/audit-entity-type', code: '2' }, role: { system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '24', display: 'Query' }, query: Buffer.from(a.query).toString('base64') }] : []),
    ],
  };
  await store.repo.transaction(async (w) => {
    await w.tx.query(`SELECT pg_advisory_xact_lock(hashtextextended('audit-chain', 0))`);
    const head = await w.tx.query<{ length: string; hash: string }>(`SELECT length::text, hash FROM audit_head WHERE id = 1`);
    const prev = head[0]?.hash ?? GENESIS;
    const length = Number(head[0]?.length ?? 0) + 1;
    const hash = hashOf(prev, event);
    const chained: AuditEvent = { ...event, extension: [{ url: CHAIN_EXTENSION, valueString: `${prev}:${hash}` }] };
    await w.insertNew([chained]);
    await w.tx.query(`INSERT INTO audit_chain (event_id, prev, hash) VALUES ($1, $2, $3)`, [event.id, prev, hash]);
    await w.tx.query(`UPDATE audit_head SET length = $1, hash = $2, mac = $3 WHERE id = 1`, [length, hash, headKey ? headMac(headKey, length, hash) : null]);
  });
}

/**
 * Re-computes the chain over the stored AuditEvents: the first broken link, or ok. Besides each event's hash and
 * order it checks that its history copy is the same text, that its search-index rows are all there (so it can be
 * found by patient and date), and that the chain is as long as its head says — with the key, that the head's
 * MAC verifies (a chain rewritten and re-hashed by someone without the key does not).
 */
export async function verifyAuditChain(store: Store): Promise<{ ok: boolean; events: number; signed: boolean; brokenAt?: string; reason?: string }> {
  const rows = await store.db.query<{ event_id: string; prev: string; hash: string; content: string | null; version: string | null; seq: string | null; indexed: string }>(
    `SELECT c.event_id, c.prev, c.hash, r.content, v.content AS version, r.seq::text,
            (SELECT count(*) FROM idx_token t WHERE t.resource_type = 'AuditEvent' AND t.resource_seq = r.seq)
          + (SELECT count(*) FROM idx_reference x WHERE x.resource_type = 'AuditEvent' AND x.resource_seq = r.seq)
          + (SELECT count(*) FROM idx_date d WHERE d.resource_type = 'AuditEvent' AND d.resource_seq = r.seq) AS indexed
     FROM audit_chain c
     LEFT JOIN resource r ON r.resource_type = 'AuditEvent' AND r.id = c.event_id
     LEFT JOIN resource_version v ON v.resource_type = 'AuditEvent' AND v.id = c.event_id AND v.version_id = 1
     ORDER BY c.seq`,
  );
  const head = (await store.db.query<{ length: string; hash: string; mac: string | null }>(`SELECT length::text, hash, mac FROM audit_head WHERE id = 1`))[0];
  const signed = !!head?.mac;
  const broken = (at: string | undefined, reason: string) => ({ ok: false, events: rows.length, signed, brokenAt: at, reason });
  let prev = GENESIS;
  for (const row of rows) {
    if (!row.content) return broken(row.event_id, 'the event is missing');
    const e = JSON.parse(row.content) as AuditEvent;
    const link = e.extension?.find((x) => x.url === CHAIN_EXTENSION)?.valueString;
    const hash = hashOf(prev, e);
    if (row.prev !== prev || row.hash !== hash || link !== `${prev}:${hash}`) return broken(row.event_id, 'content or order does not match its hash');
    if (row.version !== row.content) return broken(row.event_id, 'its history copy differs from the event');
    const want = indexRows(e);
    if (Number(row.indexed) < want.token.length + want.reference.length + want.date.length) return broken(row.event_id, 'search-index rows of the event are missing');
    prev = hash;
  }
  if (!head) return broken(undefined, 'the chain head is missing');
  if (Number(head.length) !== rows.length || head.hash !== prev) return broken(rows[rows.length - 1]?.event_id, `the head records ${head.length} events, the chain holds ${rows.length}: events were removed or added outside the audit trail`);
  if (headKey && head.mac && head.mac !== headMac(headKey, rows.length, prev)) return broken(undefined, 'the head is not signed by the audit key: the chain was rewritten');
  if (headKey && !head.mac && rows.length > 0) return { ok: true, events: rows.length, signed: false, reason: 'the head was written before an audit key was configured; it is signed from the next event on' };
  return { ok: true, events: rows.length, signed };
}

export type { Resource };
