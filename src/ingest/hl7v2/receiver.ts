/**
 * `Hl7Receiver`: the receive path (receive.ts) wired to the store's inbox, group commit and the processing — and,
 * with `HL7_ACK_AFTER=conversion`, to the background commits (background.ts).
 */
import { OutcomeError, toOutcomeError } from '../../fhir/outcome.js';
import type { Logger } from '../../log.js';
import type { Principal } from '../../auth/jwt.js';
import type { Store } from '../../store/index.js';
import type { InboxEntry, InboxInput, ReceiveResult as InboxReceiveResult } from '../../store/inbox.js';
import { Batcher } from '../batcher.js';
import { decodeAs, encode } from '../../hl7v2/decode.js';
import { BackgroundCommits, MAX_BACKGROUND } from './background.js';
import { createHl7Receiver, type Hl7Receive, type Hl7ReceiverDeps, type Received } from './receive.js';
import type { Converted, Hl7BatchProcessor, Hl7Item, ProcessOutcome } from './types.js';

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
  /** ACK after conversion: the commits that follow the answer */
  private readonly background?: BackgroundCommits;

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
    /** set with ACKs after conversion only */
    const convert = opts.ackAfter === 'conversion' ? opts.convert : undefined;
    if (opts.ackAfter === 'conversion') {
      if (!convert) throw new Error('an ACK after conversion needs a convert function');
      this.background = new BackgroundCommits(store, processBatch, { lanes, maxBatch, maxBackground: opts.maxBackground ?? MAX_BACKGROUND, logger: opts.logger });
    }
    const background = this.background;
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
              await background!.accept(c, entry, text);
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
          return background!.accept(c, entry, text);
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

  /** Where background commits give way to messages waiting for their ACK (BackgroundCommits.giveWay). */
  async giveWay(): Promise<void> {
    await (this.background?.giveWay() ?? new Promise<void>((resolve) => setImmediate(resolve)));
  }

  /** Messages acknowledged after conversion whose resources are not committed yet. */
  get backlog(): number {
    return this.background?.backlog ?? 0;
  }

  /** Resolves when every message acknowledged so far is committed (or handed back to the inbox worker). */
  async drain(): Promise<void> {
    await this.background?.drain();
  }

  /** The person a received message was about (for the audit trail); null when none. */
  async patientOf(r: ReceiveResult): Promise<string | null> {
    if (r.patientKey) return r.patientKey;
    return r.inboxId ? this.store.inbox.patientOf(r.inboxId) : null;
  }

  /** Receives one payload from MLLP or HTTP (`hl7v2-http`, the inbox channel name, is accepted for HTTP). */
  async receive(payload: Buffer, channel: 'mllp' | 'http' | 'hl7v2-http', peer?: string, caller?: Principal): Promise<ReceiveResult> {
    const answered = this.background?.answeringOne();
    let r: Received;
    try {
      r = await this.receiveFn(payload, channel === 'mllp' ? 'mllp' : 'http', peer, caller);
    } finally {
      answered?.();
    }
    if (r.id) this.pending.delete(r.id);
    return { ...r, inboxId: r.id };
  }
}
