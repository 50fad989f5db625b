/**
 * One receive path for HL7 v2, whether it came over MLLP or `POST /hl7v2`:
 *
 *   decode → store the raw bytes (durable) → recognise retransmissions → process → build the ACK → save it → answer;
 *   with HL7_ACK_AFTER=conversion: decode → convert and check → build the ACK → store the raw bytes and the ACK
 *   together (durable) → recognise retransmissions → answer, the commit to the plan following in the background.
 *
 * - The ACK never exists before `store` has resolved: nothing is acknowledged that is not stored. A store that
 *   fails gives AR (the sender keeps the message and retries) and nothing is processed.
 * - Bytes that cannot be decoded (wrong charset, no MSH) are still stored — nothing received is lost — with
 *   whatever sender and control id could be read, and answered AE/AR without processing.
 * - Retransmission (same MSH-3/4 and MSH-10): same content → the stored ACK is replayed, nothing is processed
 *   again; other content → AR with ERR 205 (duplicate key identifier).
 * - Which ACK goes back follows MSH-15/16 (ack.ts `ackToSend`); the application outcome is saved either way.
 *
 * `createHl7Receiver` is written against injected functions (tests use in-memory fakes); `Hl7Receiver`
 * (receiver.ts) wires it to the store's inbox.
 *
 * @see HL7 v2.5.1 ch. 2 §2.9 (acknowledgment rules, duplicate detection via MSH-10), §2.15.9 (MSH); tables 0008, 0357
 */
import crypto from 'node:crypto';
import { CATEGORIES, OutcomeError, toOutcomeError } from '../../fhir/outcome.js';
import type { OperationOutcomeIssue } from '../../fhir/types.js';
import type { Logger } from '../../log.js';
import type { Principal } from '../../auth/jwt.js';
import { facilityCharset } from '../../mapping/hl7v2/load.js';
import { ackToSend, buildAck, readMsh, type AckCode, type RawMsh } from '../../hl7v2/ack.js';
import { charsetFor, decodeAs, decodeHl7, declaredCharset, encode, rawMsh, type Decoded } from '../../hl7v2/decode.js';
import type { Converted, ProcessOutcome } from './types.js';

/** The transport a message came in on. */
export type Hl7Channel = 'mllp' | 'http';

/** What `store` learns about a payload besides its bytes. */
export interface StoreMeta {
  /** `MSH-3|MSH-4` as written ('' when there is no MSH) — with controlId, the retransmission key */
  sender: string;
  /** MSH-10 ('' when none) */
  controlId: string;
  /** sha256 of the raw bytes, hex */
  contentHash: string;
  /** the charset the message was (or would have been) decoded with, an iconv-lite name */
  charset: string;
  channel: Hl7Channel;
  /** `address:port` of the sender */
  peer?: string;
  /** set when the payload is refused before processing (cannot be decoded, no MSH): store it as rejected */
  rejected?: string;
  /**
   * ACK after conversion: the answer, known before the message is stored, kept with a new entry in the same
   * transaction; `refused`: the content was refused (AE/AR), the entry is stored as rejected with what was found
   */
  early?: { ack: string; refused?: { reason: string; outcome: unknown } };
}

export interface StoreResult {
  /** 'same': stored before with this sender, control id and content; 'different': same key, other content */
  duplicate: 'none' | 'same' | 'different';
  /** the ACK saved for the earlier message (for 'same'); absent when that one was never answered */
  storedAck?: Buffer;
  /** the stored entry ('same': the earlier one) */
  id: string;
}

export interface Hl7ReceiverDeps {
  /** durable write of the raw bytes; resolves only once committed */
  store: (raw: Buffer, meta: StoreMeta) => Promise<StoreResult>;
  /** parse, map and write; must be idempotent (a retransmission of an unanswered message is processed again) */
  process: (id: string, text: string) => Promise<ProcessOutcome>;
  /** keeps the ACK with the entry (replayed on retransmission) */
  saveAck: (id: string, ack: Buffer, code: string) => Promise<void>;
  /** charset when MSH-18 is empty (config.hl7DefaultCharset) */
  defaultCharset: string;
  logger: Logger;
  /** our application and facility for MSH-3/4 of an ACK to a message that named no receiver */
  self?: { application: string; facility: string };
  /**
   * may this sender send on this channel from this peer (`address:port`), or this authenticated caller (HTTP) send
   * this message? an error refuses the message (stored, AR)
   */
  admit?: (msh: RawMsh, channel: Hl7Channel, peer: string | undefined, message: { text: string; caller?: Principal }) => OutcomeError | undefined | Promise<OutcomeError | undefined>;
  /**
   * ACK after conversion: converts (and checks) a message before it is stored, so its ACK is stored with it in one
   * transaction; a converted message is then handed to `accepted`, which resolves when it may be answered.
   */
  convertFirst?: (text: string) => Converted;
  accepted?: (id: string, text: string, c: Extract<Converted, { kind: 'converted' }>) => Promise<void>;
}

export interface Received {
  /** ACK bytes to send, in the message's charset; null when MSH-15/16 ask for none */
  ack: Buffer | null;
  /** the same ACK as text (also when `ack` is null: HTTP always answers with a body) */
  ackText: string;
  /** MSA-1 of the ACK */
  code: AckCode;
  /** HTTP status: 200 for AA/CA, else the status of the error's category (CATEGORIES) */
  status: number;
  /** the stored entry; absent when the store failed */
  id?: string;
  /** the person the message is about, when known at the answer (an ACK after conversion) */
  patientKey?: string;
}

/** Receives one HL7 v2 payload; never rejects (every failure becomes an AE/AR). */
export type Hl7Receive = (payload: Buffer, channel: Hl7Channel, peer?: string, caller?: Principal) => Promise<Received>;

function statusOf(code: AckCode, err: OutcomeError | undefined): number {
  if (code === 'AA' || code === 'CA') return 200;
  if (err) return CATEGORIES[err.category].http;
  return code === 'AE' || code === 'CE' ? 422 : 400;
}

/** MSA-1 of an ACK as bytes (MSA is ASCII whatever the charset). */
function msaCode(ack: Buffer): AckCode {
  const m = /(?:^|[\r\n])MSA(.)([A-Z]{2})/.exec(ack.toString('latin1'));
  const code = m?.[2];
  return code === 'AA' || code === 'AE' || code === 'AR' || code === 'CA' || code === 'CE' || code === 'CR' ? code : 'AA';
}

/** Builds the receive function from its injected parts. */
export function createHl7Receiver(deps: Hl7ReceiverDeps): Hl7Receive {
  return async (payload, channel, peer, caller) => {
    const started = performance.now();
    // what can be read without decoding: enough to store, deduplicate and answer a broken message
    let decoded: Decoded | undefined;
    let refusal: OutcomeError | undefined;
    try {
      decoded = decodeHl7(payload, deps.defaultCharset, facilityCharset);
    } catch (err) {
      refusal = toOutcomeError(err);
    }
    const text = decoded?.text ?? rawMsh(payload);
    const msh: RawMsh | undefined = readMsh(text);
    if (!msh && !refusal) refusal = new OutcomeError('structure', 'not an HL7 v2 message: it must start with an MSH segment', 'MSH');
    if (msh && !refusal && deps.admit) refusal = await deps.admit(msh, channel, peer, { text, caller });
    const charset = decoded?.charset ?? charsetFor(declaredCharset(payload)) ?? charsetFor(deps.defaultCharset, true) ?? 'utf-8';
    const controlId = msh?.controlId ?? '';
    const log = deps.logger.child({ channel, controlId, ...(peer ? { peer } : {}) });

    /** the ACK for an outcome: what goes back (null: MSH-15/16 ask for none), its text and bytes */
    const ackFor = (code: 'AA' | 'AE' | 'AR', errors: OutcomeError[], issues: OperationOutcomeIssue[]) => {
      const sent = msh ? ackToSend(msh, code) : code;
      const ackText = buildAck(text, { code: sent ?? code, errors, issues, self: deps.self });
      return { sent, saved: sent ?? code, ackText, bytes: encode(ackText, charset), ackCode: msh ? (sent ?? code) : ('AR' as const), firstError: errors[0] };
    };
    /** answers with a built ACK; `save`: keep it with the entry first (replayed to a retransmission) */
    const reply = async (id: string | undefined, a: ReturnType<typeof ackFor>, save: boolean, patientKey?: string): Promise<Received> => {
      if (save && id !== undefined) {
        try {
          await deps.saveAck(id, a.bytes, a.saved);
        } catch (err) {
          // the message itself is stored; a retransmission will just be processed again (idempotently)
          log.error('hl7v2 ACK could not be saved', { id, error: err instanceof Error ? err.name : typeof err });
        }
      }
      log.info('hl7v2 message answered', { id, code: a.ackCode, sent: a.sent !== null, ms: +(performance.now() - started).toFixed(1) });
      return { ack: a.sent ? a.bytes : null, ackText: a.ackText, code: a.ackCode, status: statusOf(a.ackCode, a.firstError), id, ...(patientKey ? { patientKey } : {}) };
    };
    const answer = (id: string | undefined, code: 'AA' | 'AE' | 'AR', errors: OutcomeError[], issues: OperationOutcomeIssue[], patientKey?: string): Promise<Received> =>
      reply(id, ackFor(code, errors, issues), true, patientKey);

    // ACK after conversion: the message converted (and its ACK built) before it is stored, to store both together
    let early: { c: Exclude<Converted, { kind: 'fault' }>; ack: ReturnType<typeof ackFor> } | undefined;
    if (deps.convertFirst && deps.accepted && decoded && msh && !refusal) {
      const c = deps.convertFirst(decoded.text);
      if (c.kind !== 'fault') {
        // a fault of ours: the message takes the ordinary path (stored, then processed, AR if that fails again)
        const o: ProcessOutcome = c.kind === 'converted' ? { code: 'AA', errors: [], issues: c.notes } : c.outcome;
        early = { c, ack: ackFor(o.code, o.errors, [...decoded.warnings, ...(o.issues ?? [])]) };
      }
    }

    const meta: StoreMeta = {
      ...(early
        ? { early: { ack: decodeAs(early.ack.bytes, charset), ...(early.c.kind === 'refused' ? { refused: { reason: early.c.reason, outcome: early.c.record } } : {}) } }
        : {}),
      sender: msh ? `${msh.sendingApp}|${msh.sendingFacility}` : '',
      controlId,
      contentHash: crypto.createHash('sha256').update(payload).digest('hex'),
      charset,
      channel,
      ...(peer ? { peer } : {}),
      ...(refusal ? { rejected: refusal.message } : {}),
    };
    let stored: StoreResult;
    try {
      stored = await deps.store(payload, meta);
    } catch (err) {
      log.error('hl7v2 message could not be stored; answered AR', { bytes: payload.length, error: err instanceof Error ? err.name : typeof err });
      const e = err instanceof OutcomeError ? err : new OutcomeError('busy', 'the message could not be stored; send it again later');
      return answer(undefined, 'AR', [e], []);
    }
    const id = stored.id;

    if (stored.duplicate === 'same' && stored.storedAck) {
      const code = msaCode(stored.storedAck);
      log.info('hl7v2 retransmission; stored ACK replayed', { id, code });
      return { ack: stored.storedAck, ackText: decodeAs(stored.storedAck, charset), code, status: statusOf(code, undefined), id };
    }
    if (refusal) {
      log.warn('hl7v2 message refused before processing', { id, category: refusal.category, bytes: payload.length });
      return answer(id, CATEGORIES[refusal.category].msa1, [refusal], []);
    }
    if (stored.duplicate === 'different') {
      log.warn('hl7v2 control id reused with other content; refused', { id });
      const e = new OutcomeError('conflict', `control id ${controlId} from ${meta.sender} was already received with other content`, 'MSH-10');
      return answer(id, 'AR', [e], []);
    }

    if (early && stored.duplicate === 'none') {
      // stored together with its ACK: a converted message goes to the background, a refused one is finished
      if (early.c.kind === 'converted') {
        try {
          await deps.accepted!(id, decoded!.text, early.c);
        } catch (err) {
          // stored with its AA already: the background or the inbox worker (lease) commits it later
          log.error('hl7v2 message acknowledged after conversion could not be queued', { id, error: err instanceof Error ? err.message : String(err) });
        }
      }
      return reply(id, early.ack, false, early.c.kind === 'converted' ? early.c.conv.patientId : undefined);
    }

    // new, or a retransmission of one that was never answered: process (idempotently) now
    let outcome: ProcessOutcome;
    try {
      outcome = await deps.process(id, decoded!.text);
    } catch (err) {
      const e = toOutcomeError(err);
      log.error('hl7v2 processing failed', { id, category: e.category, error: err instanceof Error ? err.name : typeof err });
      outcome = {
        code: 'AR',
        errors: [e.category === 'fault' ? new OutcomeError('fault', 'the message was stored but could not be processed; it will be retried') : e],
      };
    }
    return answer(id, outcome.code, outcome.errors, [...(decoded?.warnings ?? []), ...(outcome.issues ?? [])], outcome.patientKey);
  };
}
