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
 * `createHl7Receiver` is written against injected functions (tests use in-memory fakes); `Hl7Receiver` wires it
 * to the store's inbox.
 *
 * @see HL7 v2.5.1 ch. 2 §2.9 (acknowledgment rules, duplicate detection via MSH-10), §2.15.9 (MSH); tables 0008, 0357
 */
import crypto from 'node:crypto';
import { CATEGORIES, OutcomeError, toOutcomeError } from '../../fhir/outcome.js';
import type { OperationOutcomeIssue } from '../../fhir/types.js';
import type { Logger } from '../../log.js';
import type { Principal } from '../../auth/jwt.js';
import { facilityCharset } from '../../mapping/hl7v2.js';
import type { Store } from '../../store/index.js';
import type { InboxEntry, InboxInput, ReceiveResult as InboxReceiveResult } from '../../store/inbox.js';
import { Batcher } from '../batcher.js';
import { ackToSend, buildAck, readMsh, type AckCode, type RawMsh } from './ack.js';
import { charsetFor, decodeAs, decodeHl7, declaredCharset, encode, rawMsh, type Decoded } from './decode.js';
import type { Conversion } from '../../mapping/hl7v2.js';
import type { Converted } from './process.js';

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

/** The outcome of processing one stored, decoded message. */
export interface ProcessOutcome {
  code: 'AA' | 'AE' | 'AR';
  /** errors, one ERR per issue */
  errors: OutcomeError[];
  /** warnings and information (e.g. unused segments), reported as ERR with severity W/I */
  issues?: OperationOutcomeIssue[];
  /** the person the message is about, when known at the answer (an ACK after conversion) */
  patientKey?: string;
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

/** Processes one stored, decoded inbox entry (process.ts); finishes the entry itself. */
export type Hl7Processor = (entry: InboxEntry, text: string) => Promise<ProcessOutcome>;

/** A stored, decoded message waiting to be processed. */
export interface Hl7Item {
  entry: InboxEntry;
  text: string;
  /** its conversion, when made already (the ACK went back after conversion) */
  converted?: { conv: Conversion; notes: OperationOutcomeIssue[] };
}

/** Processes several stored, decoded entries together; one result per item, in order (an Error: not processed now). */
export type Hl7BatchProcessor = (items: Hl7Item[]) => Promise<(ProcessOutcome | Error)[]>;

/** Result of `Hl7Receiver.receive`. */
export interface ReceiveResult extends Received {
  inboxId?: string;
}

/**
 * When an AA goes back (`HL7_ACK_AFTER`):
 * - `commit`: once the message's resources are committed to the shared plan (the default);
 * - `conversion`: once the message is converted, its resources passed the checks the store makes on write, and the
 *   raw message is committed to the inbox together with its ACK. Its resources are then committed in the background,
 *   from the inbox entry: per person in arrival order, a refusal at that stage (a state rule) recorded in the message
 *   log. Mirth's "respond after source transformer" with a source queue; for senders that must not wait for the plan.
 */
export type AckAfter = 'commit' | 'conversion';

/** messages accepted but not yet committed, past which an ACK after conversion waits for the commit (backpressure) */
export const MAX_BACKGROUND = 2000;
/** messages in one background transaction: small, so the event loop is never held long between ACKs */
const BACKGROUND_BATCH = 4;
/** the longest a background batch pauses between two contributions for messages waiting for their ACK */
const BACKGROUND_MAX_PAUSE_MS = 100;

function laneOf(key: string, n: number): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0;
  return Math.abs(h) % n;
}

/**
 * `createHl7Receiver` wired to the store's inbox (committed transaction before resolve) and a processor.
 *
 * Messages arriving together — many MLLP connections, or HTTP clients — share transactions (group commit,
 * batcher.ts): one to store a batch, one to process it, one to save its ACKs. Each message still gets its own
 * ACK, only after its own bytes are committed; a batch that fails is retried message by message (process.ts).
 */
export class Hl7Receiver {
  private readonly receiveFn: Hl7Receive;
  /** entries stored by calls still in progress, by id (the processor wants the whole entry) */
  private readonly pending = new Map<string, { entry: InboxEntry; charset: string }>();
  private readonly storing: Batcher<InboxInput, InboxReceiveResult>;
  private readonly processing: Batcher<Hl7Item, ProcessOutcome>;
  private readonly acking: Batcher<{ id: string; ack: string }, undefined>;
  private readonly ackAfter: AckAfter;
  private readonly maxBackground: number;
  /** ACK after conversion: one single-lane batcher per lane, a person always in the same one (arrival order) */
  private readonly background: Batcher<Hl7Item, ProcessOutcome>[] = [];
  /** background commits not yet settled */
  private readonly inFlight = new Set<Promise<void>>();
  private readonly log: Logger;
  /** messages received and not yet answered */
  private answering = 0;
  /** when background work last resumed after giving way */
  private resumed = performance.now();
  /** background work pausing until no message waits for its ACK */
  private readonly quietWaiters = new Set<() => void>();

  constructor(
    private readonly store: Store,
    processBatch: Hl7BatchProcessor,
    opts: {
      defaultCharset: string;
      logger: Logger;
      self?: { application: string; facility: string };
      admit?: Hl7ReceiverDeps['admit'];
      /** largest number of messages in one transaction (default 64) */
      maxBatch?: number;
      /** batches at the database at the same time (default: 1 on the embedded store, 2 on PostgreSQL) */
      lanes?: number;
      /** when the AA goes back (default 'commit'); 'conversion' needs `convert` */
      ackAfter?: AckAfter;
      /** converts (and checks) one message for an ACK after conversion: process.ts `convertMessage` with validation */
      convert?: (text: string) => Converted;
      /** ACK after conversion: messages waiting for their commit past which an ACK waits too (default MAX_BACKGROUND) */
      maxBackground?: number;
    },
  ) {
    const maxBatch = opts.maxBatch ?? 64;
    const lanes = opts.lanes ?? (store.db.kind === 'pglite' ? 1 : 2);
    this.log = opts.logger;
    this.ackAfter = opts.ackAfter ?? 'commit';
    this.maxBackground = opts.maxBackground ?? MAX_BACKGROUND;
    /** set with ACKs after conversion only */
    const convert = this.ackAfter === 'conversion' ? opts.convert : undefined;
    if (this.ackAfter === 'conversion') {
      if (!convert) throw new Error('an ACK after conversion needs a convert function');
      for (let i = 0; i < lanes; i++) this.background.push(new Batcher(processBatch, { maxBatch: Math.min(maxBatch, BACKGROUND_BATCH), lanes: 1 }));
    }
    this.storing = new Batcher((inputs) => store.inbox.receiveMany(inputs), { maxBatch, lanes });
    this.processing = new Batcher(processBatch, { maxBatch, lanes });
    this.acking = new Batcher(
      async (acks) => {
        await store.inbox.saveAcks(acks);
        return acks.map(() => undefined);
      },
      { maxBatch: maxBatch * 2, lanes: 1 },
    );
    this.receiveFn = createHl7Receiver({
      ...(convert
        ? {
            convertFirst: convert,
            accepted: async (id, text, c) => {
              const entry = this.pending.get(id)?.entry ?? (await this.store.inbox.get(id));
              if (!entry) throw new OutcomeError('fault', `inbox entry ${id} not found`);
              await this.acceptConverted(c, entry, text);
            },
          }
        : {}),
      defaultCharset: opts.defaultCharset,
      logger: opts.logger,
      self: opts.self,
      admit: opts.admit,
      store: async (raw, meta) => {
        const r = await this.storing.submit({
          channel: meta.channel === 'http' ? 'hl7v2-http' : 'mllp',
          payload: raw,
          sender: meta.sender || undefined,
          controlId: meta.controlId || undefined,
          contentType: 'x-application/hl7-v2+er7',
          dedupe: !meta.rejected,
          rejectReason: meta.rejected ?? meta.early?.refused?.reason,
          outcome: meta.early?.refused?.outcome,
          ack: meta.early?.ack,
        });
        const entry = r.duplicate === 'same' && r.original ? r.original : r.entry;
        this.pending.set(entry.id, { entry, charset: meta.charset });
        const storedAck = r.duplicate === 'same' && r.original?.ack ? encode(r.original.ack, meta.charset) : undefined;
        return { duplicate: r.duplicate, id: entry.id, ...(storedAck ? { storedAck } : {}) };
      },
      process: async (id, text) => {
        const entry = this.pending.get(id)?.entry ?? (await this.store.inbox.get(id));
        if (!entry) throw new OutcomeError('fault', `inbox entry ${id} not found`);
        if (convert) {
          // a retransmission of a message never answered (or one whose early conversion failed): as on arrival
          const c = convert(text);
          if (c.kind === 'fault') throw c.error;
          if (c.kind === 'refused') {
            await this.store.inbox.finishMany([{ id, status: 'rejected', reason: c.reason, outcome: c.record }]);
            return c.outcome;
          }
          return this.acceptConverted(c, entry, text);
        }
        try {
          return await this.processing.submit({ entry, text });
        } catch (err) {
          const e = toOutcomeError(err);
          await this.store.inbox.finish(id, { status: 'failed', reason: err instanceof Error ? err.message : String(err), outcome: e.outcome }).catch(() => undefined);
          throw err;
        }
      },
      saveAck: async (id, ack) => {
        await this.acking.submit({ id, ack: decodeAs(ack, this.pending.get(id)?.charset ?? 'utf-8') });
      },
    });
  }

  /**
   * ACK after conversion: a converted message is queued for its person's background lane and answered AA at once —
   * unless `maxBackground` messages are waiting already, then its answer waits for its commit. A background commit
   * that fails (the database, not the content) puts the entry back for the inbox worker; one the store refuses (a
   * state rule) is finished as rejected by the batch, as in commit mode.
   */
  private async acceptConverted(c: Extract<Converted, { kind: 'converted' }>, entry: InboxEntry, text: string): Promise<ProcessOutcome> {
    const lane = this.background[laneOf(c.conv.patientId, this.background.length)];
    const committed = lane.submit({ entry, text, converted: { conv: c.conv, notes: c.notes, ...(c.also ? { also: c.also } : {}) } });
    const settled: Promise<void> = committed
      .then(
        (r) => {
          if (r.code !== 'AA') this.log.warn('hl7v2 message acknowledged after conversion was refused at commit', { id: entry.id, code: r.code });
        },
        async (err: unknown) => {
          this.log.error('hl7v2 background commit failed; the entry goes back to the inbox worker', { id: entry.id, error: err instanceof Error ? err.message : String(err) });
          await this.store.inbox.requeue(entry.id).catch(() => undefined);
        },
      )
      .finally(() => this.inFlight.delete(settled));
    this.inFlight.add(settled);
    if (this.inFlight.size > this.maxBackground) return committed;
    return { code: 'AA', errors: [], issues: c.notes, patientKey: c.conv.patientId };
  }

  /**
   * Where background work gives way (between two contributions of a batch, and before its writes): while messages
   * are waiting for their ACK, the background pauses three times as long as it has just worked (at most
   * BACKGROUND_MAX_PAUSE_MS, less when the last of them is answered sooner), so answering gets at least three
   * quarters of the event loop; when none is waiting, or the backlog is full, it only lets the event loop turn. (The
   * gateway does not answer after conversion on the embedded store, whose one connection a pause would hold.)
   */
  async giveWay(): Promise<void> {
    const worked = performance.now() - this.resumed;
    const wait = this.answering > 0 && this.inFlight.size <= this.maxBackground ? Math.min(3 * worked, BACKGROUND_MAX_PAUSE_MS) : 0;
    if (wait < 1) await new Promise<void>((resolve) => setImmediate(resolve));
    else {
      // until the last waiting message is answered, or the pause is over
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.quietWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, wait);
        this.quietWaiters.add(done);
      });
    }
    this.resumed = performance.now();
  }

  /** Messages acknowledged after conversion whose resources are not committed yet. */
  get backlog(): number {
    return this.inFlight.size;
  }

  /** Resolves when every message acknowledged so far is committed (or handed back to the inbox worker). */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** The person a received message was about (for the audit trail); null when none. */
  async patientOf(r: ReceiveResult): Promise<string | null> {
    if (r.patientKey) return r.patientKey;
    return r.inboxId ? this.store.inbox.patientOf(r.inboxId) : null;
  }

  /** Receives one payload from MLLP or HTTP (`hl7v2-http`, the inbox channel name, is accepted for HTTP). */
  async receive(payload: Buffer, channel: 'mllp' | 'http' | 'hl7v2-http', peer?: string, caller?: Principal): Promise<ReceiveResult> {
    this.answering++;
    let r: Received;
    try {
      r = await this.receiveFn(payload, channel === 'mllp' ? 'mllp' : 'http', peer, caller);
    } finally {
      this.answering--;
      if (this.answering === 0) for (const resume of [...this.quietWaiters]) resume();
    }
    if (r.id) this.pending.delete(r.id);
    return { ...r, inboxId: r.id };
  }
}
