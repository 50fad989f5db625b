/**
 * FHIR submissions from hospital and GP systems: transaction/batch Bundles (POST /fhir) and message Bundles
 * (POST /fhir/$process-message). The raw Bundle is stored in the inbox first; a transaction's entries and its
 * care-plan contribution are written in ONE database transaction, with the inbox entry finished inside it.
 *
 * What a submission contributes to the shared plan is read from its content, exactly as for HL7 v2: a finished
 * inpatient Encounter with a discharge disposition is a discharge; a ServiceRequest whose performer is an
 * Organization (a municipality, another provider) is a referral; Conditions, Goals and Observations join the plan.
 * Provenance names the inbox entry, as for every source.
 */
import path from 'node:path';
import crypto from 'node:crypto';
import type { Bundle, BundleEntry, Encounter, MessageHeader, Organization, Patient, Provenance, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { OutcomeError, toOutcomeError } from '../../fhir/outcome.js';
import { bundleEntryLimit, parseJsonBody, type JsonLimits } from '../../fhir/json.js';
import { deterministicId } from '../../fhir/identifiers.js';
import type { Store } from '../../store/index.js';
import { retryDeadlocks } from '../../store/unit-of-work.js';
import type { CallerRepository } from '../../store/repository.js';
import type { Writer } from '../../store/writer.js';
import { assemble, INBOX_SYSTEM } from '../../careplan/assemble.js';
import type { Contribution } from '../../county/contribution.js';
import type { PlanEvent } from '../../county/contribution.js';
import { mappingsDir } from '../../paths.js';
import { readDataFile } from '../../data-file.js';
import { failedEntry, planBundle, runBatchEntry, runTransaction, type EntryResult, type PlannedEntry } from './bundle.js';

export interface Submission {
  body: Buffer;
  contentType?: string;
  caller?: string;
  baseUrl: string;
  /**
   * The store as the submitter may see it: every entry (GET, conditional forms included) is read and written
   * through it; the plan assembly that follows is the gateway's own work. Absent: the open, loopback trial.
   */
  repo?: CallerRepository;
  /** bounds on the body (fhir/json.ts) */
  jsonLimits?: Partial<JsonLimits>;
}

/** Stores the raw submission in the inbox (committed) and returns its id. */
async function store(st: Store, s: Submission): Promise<string> {
  const { entry } = await st.inbox.receive({ channel: 'fhir', payload: s.body, sender: s.caller ?? 'anonymous', contentType: s.contentType });
  return entry.id;
}

/** The body as JSON within its bounds, and a Bundle within its entry limit (413 past either). */
function parse(body: Buffer, limits?: Partial<JsonLimits>): unknown {
  const parsed = parseJsonBody(body, limits);
  bundleEntryLimit(parsed, limits);
  return parsed;
}

/**
 * Parses before anything is stored: a body past the bounds is refused at once (413; the sender keeps it, and it
 * costs no storage); any other problem is reported after the body is stored, as for every submission.
 */
function preparse(s: Submission): () => unknown {
  let value: unknown;
  let error: unknown;
  try {
    value = parse(s.body, s.jsonLimits);
  } catch (e) {
    if (e instanceof OutcomeError && e.category === 'too-large') throw e;
    error = e;
  }
  return () => {
    if (error) throw error;
    return value;
  };
}

/** POST /fhir: a transaction or batch Bundle → its response Bundle. */
export async function processBundle(st: Store, s: Submission): Promise<Bundle> {
  const body = preparse(s);
  const inboxId = await store(st, s);
  try {
    const { type, entries, bundle } = planBundle(body());
    const description = `FHIR ${type} Bundle${bundle.id ? ` ${bundle.id}` : ''} from ${s.caller ?? 'anonymous'}`;
    if (type === 'transaction') {
      // a deadlock victim runs again from a fresh plan (the first attempt's ids and rewritten references are gone)
      let attempts = 0;
      const results = await retryDeadlocks(async () => {
        const attempt = attempts++ === 0 ? entries : planBundle(body()).entries;
        return (s.repo ?? st.repo).transaction(async (w) => {
          const results = await runTransaction(w, attempt, s.baseUrl);
          const written = results.map((r) => r.written).filter((r): r is Resource => !!r);
          const produced = await contribute(w.trusted(), written, { inboxId, description });
          await st.inbox.finish(inboxId, { status: 'processed', produced }, w.tx);
          return results;
        });
      });
      return responseBundle('transaction-response', results);
    }
    // batch: entry by entry, each in its own transaction
    const results: EntryResult[] = [];
    const produced: string[] = [];
    for (const p of entries) {
      try {
        const { r, made } = await retryDeadlocks(() =>
          (s.repo ?? st.repo).transaction(async (w) => {
            const r = await runBatchEntry(w, structuredClone(p), s.baseUrl);
            return { r, made: await contribute(w.trusted(), r.written ? [r.written] : [], { inboxId, description: `${description}, entry ${p.index}` }) };
          }),
        );
        results.push(r);
        produced.push(...made);
      } catch (err) {
        if (toOutcomeError(err).category === 'fault') throw err;
        results.push(failedEntry(p.index, err));
      }
    }
    await st.inbox.finish(inboxId, { status: 'processed', produced });
    return responseBundle('batch-response', results);
  } catch (err) {
    await reject(st, inboxId, err);
    throw err;
  }
}

async function reject(st: Store, inboxId: string, err: unknown): Promise<void> {
  const e = toOutcomeError(err);
  await st.inbox.finish(inboxId, { status: e.category === 'fault' ? 'failed' : 'rejected', reason: e.message, outcome: e.outcome }).catch(() => undefined);
}

function responseBundle(type: 'transaction-response' | 'batch-response', results: EntryResult[]): Bundle {
  return {
    resourceType: 'Bundle',
    type,
    entry: results.map((r) => ({ ...(r.resource ? { resource: r.resource } : {}), response: r.response })),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Messaging

interface MessageEvent {
  code: string;
  system?: string;
  plan: PlanEvent;
  display?: string;
}
let events: MessageEvent[] | undefined;
export function messageEvents(): MessageEvent[] {
  events ??= readDataFile<{ events: MessageEvent[] }>(path.join(mappingsDir(), 'fhir/message-events.yaml'), 'fhir-message-events', 'mappings/fhir/message-events.yaml').events;
  return events;
}

/**
 * POST /fhir/$process-message: a message Bundle (first entry a MessageHeader) → the response message.
 * The message's other entries are written like a transaction (PUT when they carry an id, else POST), with
 * the event from the MessageHeader. Content errors give a response message with code `fatal-error` and the
 * OperationOutcome; a body that is not a message Bundle is refused outright.
 */
export async function processMessage(st: Store, s: Submission): Promise<Bundle> {
  const body = preparse(s);
  const inboxId = await store(st, s);
  let header: MessageHeader | undefined;
  try {
    const bundle = body() as Bundle;
    if (!bundle || typeof bundle !== 'object' || bundle.resourceType !== 'Bundle') throw new OutcomeError('invalid', '$process-message takes a Bundle', 'resourceType');
    if (bundle.type !== 'message') throw new OutcomeError('invalid', `Bundle.type must be message, got "${String(bundle.type)}"`, 'Bundle.type');
    header = bundle.entry?.[0]?.resource as MessageHeader | undefined;
    if (header?.resourceType !== 'MessageHeader') throw new OutcomeError('invalid', 'the first entry of a message Bundle must be its MessageHeader', 'Bundle.entry[0].resource');
    if (!header.id) throw new OutcomeError('invalid', 'the MessageHeader needs an id (the response names it)', 'Bundle.entry[0].resource.id');
  } catch (err) {
    await reject(st, inboxId, err);
    throw err;
  }
  const hdr = header;
  try {
    const coding = hdr.eventCoding;
    const ev = messageEvents().find((e) => e.code === coding?.code && (!coding?.system || !e.system || e.system === coding.system));
    if (!ev) {
      throw new OutcomeError('unsupported', `message event ${coding?.system ?? ''}|${coding?.code ?? '(none)'} is not supported (see mappings/fhir/message-events.yaml)`, 'MessageHeader.eventCoding');
    }
    const bundle = body() as Bundle;
    const planned: BundleEntry[] = (bundle.entry ?? []).slice(1).map((e) => ({
      fullUrl: e.fullUrl,
      resource: e.resource,
      request: e.resource?.id ? { method: 'PUT', url: `${e.resource.resourceType}/${e.resource.id}` } : { method: 'POST', url: String(e.resource?.resourceType) },
    }));
    const { entries } = planBundle({ resourceType: 'Bundle', type: 'transaction', entry: planned });
    for (const p of entries) p.index += 1; // locations name the message's own entries
    const description = `FHIR message ${ev.code} (MessageHeader ${hdr.id}) from ${hdr.source?.endpoint ?? s.caller ?? 'anonymous'}`;
    await (s.repo ?? st.repo).transaction(async (w) => {
      const results = await runTransaction(w, entries, s.baseUrl);
      const written = results.map((r) => r.written).filter((r): r is Resource => !!r);
      const produced = await contribute(w.trusted(), written, { inboxId, description, event: ev.plan });
      await st.inbox.finish(inboxId, { status: 'processed', produced }, w.tx);
    });
    return responseMessage(hdr, s.baseUrl, 'ok');
  } catch (err) {
    const e = toOutcomeError(err);
    if (e.category === 'fault') {
      await reject(st, inboxId, err);
      throw err;
    }
    await reject(st, inboxId, err);
    return responseMessage(hdr, s.baseUrl, 'fatal-error', e.outcome);
  }
}

function responseMessage(req: MessageHeader, baseUrl: string, code: 'ok' | 'fatal-error', outcome?: Resource): Bundle {
  const id = crypto.randomUUID();
  const ooId = crypto.randomUUID();
  const header: MessageHeader = {
    resourceType: 'MessageHeader',
    id,
    eventCoding: req.eventCoding,
    source: { name: 'care-gateway', endpoint: baseUrl },
    ...(req.source?.endpoint ? { destination: [{ endpoint: req.source.endpoint }] } : {}),
    response: { identifier: req.id!, code, ...(outcome ? { details: { reference: `urn:uuid:${ooId}` } } : {}) },
  };
  return {
    resourceType: 'Bundle',
    id: crypto.randomUUID(),
    type: 'message',
    timestamp: new Date().toISOString(),
    entry: [{ fullUrl: `urn:uuid:${id}`, resource: header }, ...(outcome ? [{ fullUrl: `urn:uuid:${ooId}`, resource: { ...outcome, id: ooId } }] : [])],
  };
}

// ---------------------------------------------------------------------------------------------------------
// Care-plan contribution

const patientOf = (r: Resource): string | undefined => {
  if (r.resourceType === 'Patient') return r.id;
  const ref = (r as { subject?: { reference?: string }; patient?: { reference?: string } }).subject?.reference ?? (r as { patient?: { reference?: string } }).patient?.reference;
  return ref?.startsWith('Patient/') ? ref.slice(8).split('/')[0] : undefined;
};

/**
 * Feeds what a FHIR submission wrote into the shared plans of the people it concerns (inside the caller's
 * transaction), and records one Provenance for the submission's own writes. Returns version references of
 * everything written, for the inbox entry.
 */
export async function contribute(w: Writer, written: Resource[], c: { inboxId: string; description: string; event?: PlanEvent }): Promise<string[]> {
  const produced = written.map((r) => `${r.resourceType}/${r.id}/_history/${r.meta?.versionId}`);
  if (written.length === 0) return produced;
  const byPatient = new Map<string, Resource[]>();
  for (const r of written) {
    const p = patientOf(r);
    if (p) byPatient.set(p, [...(byPatient.get(p) ?? []), r]);
  }
  let org: Organization | undefined;
  for (const [patientId, resources] of byPatient) {
    const patient = await w.readOptional<Patient>('Patient', patientId);
    if (!patient) continue;
    const encounter = resources.find(
      (r): r is Encounter => r.resourceType === 'Encounter' && r.status === 'finished' && !!r.hospitalization?.dischargeDisposition && ['IMP', 'ACUTE', 'NONAC'].includes(r.class?.code ?? ''),
    );
    const referral = resources.find((r): r is ServiceRequest => r.resourceType === 'ServiceRequest' && !!r.performer?.some((p) => p.reference?.startsWith('Organization/')));
    const event: PlanEvent = c.event && c.event !== 'other' ? c.event : encounter ? 'discharge' : referral ? 'referral' : (c.event ?? 'other');
    const orgRef = encounter?.serviceProvider?.reference ?? (referral?.requester?.reference?.startsWith('Organization/') ? referral.requester.reference : undefined);
    org = orgRef?.startsWith('Organization/') ? await w.readOptional<Organization>('Organization', orgRef.slice(13)) : undefined;
    const contribution: Contribution = {
      channel: 'fhir',
      inboxId: c.inboxId,
      description: c.description,
      organization: org,
      author: referral?.requester?.reference?.startsWith('Practitioner') ? referral.requester : undefined,
      patient,
      patientStub: true,
      resources: resources.filter((r) => r.resourceType !== 'Patient' && !(org && r.resourceType === 'Organization' && r.id === org.id)),
      event,
      encounterId: encounter?.id,
      occurredAt: encounter?.period?.end ?? referral?.authoredOn,
    };
    const result = await assemble(w, contribution);
    produced.push(...result.written);
  }
  // the submission's own writes: who contributed them, from which inbox entry
  const prov: Provenance = {
    resourceType: 'Provenance',
    id: deterministicId('Provenance', c.inboxId, 'SUBMITTED', ...produced.slice(0, written.length)),
    target: produced.slice(0, written.length).map((reference) => ({ reference })),
    recorded: new Date().toISOString(),
    activity: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: 'CREATE' }] },
    agent: [
      {
        type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'author' }] },
        who: org ? { reference: `Organization/${org.id}` } : { display: c.description },
      },
    ],
    entity: [{ role: 'source', what: { identifier: { system: INBOX_SYSTEM, value: c.inboxId }, display: c.description } }],
  };
  const [p] = await w.updateMany([prov]);
  produced.push(`Provenance/${p.resource.id}/_history/${p.resource.meta?.versionId}`);
  return produced;
}

export type { PlannedEntry };
