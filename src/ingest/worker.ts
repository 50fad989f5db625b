/**
 * The inbox worker: claims stored entries that are waiting (received, or left in processing by an instance
 * that died) one at a time with `FOR UPDATE SKIP LOCKED`, and runs the processor registered for the entry's
 * channel. Several instances may run workers against one PostgreSQL: each entry is processed by one of them.
 */
import type { Logger } from '../log.js';
import type { InboxEntry, InboxChannel } from '../store/inbox.js';
import type { Store } from '../store/index.js';
import { toOutcomeError } from '../fhir/outcome.js';

export interface ProcessResult {
  status: 'processed' | 'rejected';
  reason?: string;
  outcome?: unknown;
  produced?: string[];
  patientKey?: string;
  ack?: string;
}

/**
 * Processes one stored entry idempotently: running it twice yields the same resources. A processor either
 * finishes the entry itself (inside its write transaction) and returns nothing, or returns the result to record.
 */
export type Processor = (entry: InboxEntry & { payload: Buffer }) => Promise<ProcessResult | void>;

export class InboxWorker {
  private running = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly store: Store,
    private readonly processors: Partial<Record<InboxChannel, Processor>>,
    private readonly logger: Logger,
    private readonly idleMs = 1000,
  ) {}

  /** Claims and processes entries until none is waiting; returns how many it processed. */
  async drain(): Promise<number> {
    let n = 0;
    for (;;) {
      const entry = await this.store.inbox.claim();
      if (!entry) return n;
      await this.runOne(entry);
      n++;
    }
  }

  /** Processes one entry now (admin $reprocess): claims it unless another instance holds it. */
  async runById(id: string): Promise<boolean> {
    const entry = await this.store.inbox.claimById(id);
    if (!entry) return false;
    await this.runOne(entry);
    return true;
  }

  async runOne(entry: InboxEntry & { payload: Buffer }): Promise<void> {
    const processor = this.processors[entry.channel];
    try {
      if (!processor) throw new Error(`no processor for channel ${entry.channel}`);
      const r = await processor(entry);
      if (r) await this.store.inbox.finish(entry.id, r);
    } catch (err) {
      const e = toOutcomeError(err);
      this.logger.warn('inbox entry failed', { id: entry.id, channel: entry.channel, category: e.category });
      await this.store.inbox.finish(entry.id, { status: 'failed', reason: err instanceof Error ? err.message : String(err), outcome: e.outcome });
    }
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        try {
          const n = await this.drain();
          if (n > 0) this.logger.info('inbox entries processed', { count: n });
        } catch (err) {
          this.logger.error('inbox worker error', { error: err instanceof Error ? err.message : String(err) });
        }
        if (!this.running) break;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.idleMs);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
    })();
  }

  /** Lets the worker look for work now instead of at its next poll. */
  poke(): void {
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
  }
}
