/**
 * Group commit: requests that arrive while the previous batch is still at the database are gathered and run
 * together as the next batch. Alone, a request runs at once (it waits only for the current turn of the event
 * loop, so requests that arrived together start together); under load, batches grow by themselves and one
 * transaction serves many messages. `lanes` batches may run at the same time (PostgreSQL has a pool; the
 * embedded store one connection); requests waiting together are shared evenly among the lanes that are free.
 */
export type BatchResult<O> = O | Error;

export class Batcher<I, O> {
  private queue: { item: I; resolve: (o: O) => void; reject: (e: unknown) => void }[] = [];
  private running = 0;
  private scheduled = false;

  constructor(
    /** runs one batch; returns one result per item, in order (an Error fails that item alone) */
    private readonly run: (items: I[]) => Promise<BatchResult<O>[]>,
    private readonly opts: { maxBatch: number; lanes: number },
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.kick();
    });
  }

  /** requests waiting for a lane */
  get waiting(): number {
    return this.queue.length;
  }

  private kick(): void {
    if (this.scheduled || this.running >= this.opts.lanes || this.queue.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.start();
    });
  }

  private start(): void {
    while (this.running < this.opts.lanes && this.queue.length > 0) {
      // what is waiting is shared among the free lanes: one lane's batch is at the database while the next is
      // being prepared here, instead of every request riding in one batch and the lanes taking turns idling
      const free = this.opts.lanes - this.running;
      const batch = this.queue.splice(0, Math.min(this.opts.maxBatch, Math.ceil(this.queue.length / free)));
      this.running++;
      this.run(batch.map((b) => b.item))
        .then(
          (results) => {
            batch.forEach((b, i) => {
              const r = results[i];
              if (r instanceof Error) b.reject(r);
              else if (r === undefined && results.length <= i) b.reject(new Error('batch returned no result for an item'));
              else b.resolve(r as O);
            });
          },
          (err: unknown) => {
            for (const b of batch) b.reject(err);
          },
        )
        .finally(() => {
          this.running--;
          this.kick();
        });
    }
  }
}
