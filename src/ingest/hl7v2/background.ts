/**
 * The background half of `HL7_ACK_AFTER=conversion`: messages answered AA once converted are committed here, per
 * person in arrival order, while the receive path keeps answering. Background work gives way to messages waiting
 * for their ACK, and past `maxBackground` uncommitted messages an answer waits for its commit (backpressure).
 */
import type { Logger } from '../../log.js';
import type { Store } from '../../store/index.js';
import type { InboxEntry } from '../../store/inbox.js';
import { Batcher } from '../batcher.js';
import type { Converted, Hl7BatchProcessor, Hl7Item, ProcessOutcome } from './types.js';

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

export class BackgroundCommits {
  /** one single-lane batcher per lane, a person always in the same one (arrival order) */
  private readonly lanes: Batcher<Hl7Item, ProcessOutcome>[] = [];
  /** background commits not yet settled */
  private readonly inFlight = new Set<Promise<void>>();
  /** messages received and not yet answered */
  private answering = 0;
  /** when background work last resumed after giving way */
  private resumed = performance.now();
  /** background work pausing until no message waits for its ACK */
  private readonly quietWaiters = new Set<() => void>();

  constructor(
    private readonly store: Store,
    processBatch: Hl7BatchProcessor,
    private readonly opts: { lanes: number; maxBatch: number; maxBackground: number; logger: Logger },
  ) {
    for (let i = 0; i < opts.lanes; i++) this.lanes.push(new Batcher(processBatch, { maxBatch: Math.min(opts.maxBatch, BACKGROUND_BATCH), lanes: 1 }));
  }

  /**
   * Queues a converted message for its person's lane and answers AA at once — unless `maxBackground` messages are
   * waiting already, then the answer waits for its commit. A background commit that fails (the database, not the
   * content) puts the entry back for the inbox worker; one the store refuses (a state rule) is finished as rejected
   * by the batch, as in commit mode.
   */
  async accept(c: Extract<Converted, { kind: 'converted' }>, entry: InboxEntry, text: string): Promise<ProcessOutcome> {
    const lane = this.lanes[laneOf(c.conv.patientId, this.lanes.length)];
    const committed = lane.submit({ entry, text, converted: { conv: c.conv, notes: c.notes, ...(c.also ? { also: c.also } : {}) } });
    const log = this.opts.logger;
    const settled: Promise<void> = committed
      .then(
        (r) => {
          if (r.code !== 'AA') log.warn('hl7v2 message acknowledged after conversion was refused at commit', { id: entry.id, code: r.code });
        },
        async (err: unknown) => {
          log.error('hl7v2 background commit failed; the entry goes back to the inbox worker', { id: entry.id, error: err instanceof Error ? err.message : String(err) });
          await this.store.inbox.requeue(entry.id).catch(() => undefined);
        },
      )
      .finally(() => this.inFlight.delete(settled));
    this.inFlight.add(settled);
    if (this.inFlight.size > this.opts.maxBackground) return committed;
    return { code: 'AA', errors: [], issues: c.notes, patientKey: c.conv.patientId };
  }

  /** A message is being received and answered: background work gives way until `done` is called. */
  answeringOne(): () => void {
    this.answering++;
    return () => {
      this.answering--;
      if (this.answering === 0) for (const resume of [...this.quietWaiters]) resume();
    };
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
    const wait = this.answering > 0 && this.inFlight.size <= this.opts.maxBackground ? Math.min(3 * worked, BACKGROUND_MAX_PAUSE_MS) : 0;
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

  /** Messages acknowledged whose resources are not committed yet. */
  get backlog(): number {
    return this.inFlight.size;
  }

  /** Resolves when every message acknowledged so far is committed (or handed back to the inbox worker). */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }
}
