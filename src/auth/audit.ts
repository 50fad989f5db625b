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
import { canonicalJson } from '../store/repository.js';
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
    const last = await w.tx.query<{ hash: string; seq: string }>(`SELECT hash, seq FROM audit_chain ORDER BY seq DESC LIMIT 1`);
    const prev = last[0]?.hash ?? GENESIS;
    const hash = hashOf(prev, event);
    const chained: AuditEvent = { ...event, extension: [{ url: CHAIN_EXTENSION, valueString: `${prev}:${hash}` }] };
    await w.updateMany([chained]);
    await w.tx.query(`INSERT INTO audit_chain (event_id, prev, hash) VALUES ($1, $2, $3)`, [event.id, prev, hash]);
  });
}

/** Re-computes the chain over the stored AuditEvents: the first broken link, or ok. */
export async function verifyAuditChain(store: Store): Promise<{ ok: boolean; events: number; brokenAt?: string; reason?: string }> {
  const rows = await store.db.query<{ event_id: string; prev: string; hash: string; content: string | null }>(
    `SELECT c.event_id, c.prev, c.hash, r.content FROM audit_chain c LEFT JOIN resource r ON r.resource_type = 'AuditEvent' AND r.id = c.event_id ORDER BY c.seq`,
  );
  let prev = GENESIS;
  for (const row of rows) {
    if (!row.content) return { ok: false, events: rows.length, brokenAt: row.event_id, reason: 'the event is missing' };
    const e = JSON.parse(row.content) as AuditEvent;
    const link = e.extension?.find((x) => x.url === CHAIN_EXTENSION)?.valueString;
    const hash = hashOf(prev, e);
    if (row.prev !== prev || row.hash !== hash || link !== `${prev}:${hash}`) return { ok: false, events: rows.length, brokenAt: row.event_id, reason: 'content or order does not match its hash' };
    prev = hash;
  }
  return { ok: true, events: rows.length };
}

export type { Resource };
