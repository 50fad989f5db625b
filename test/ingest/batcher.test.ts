/**
 * Group commit (src/ingest/batcher.ts): requests that arrive together share one run, the batch size and the
 * number of runs at a time are bounded, and one item's failure is that item's alone.
 */
import { Batcher } from '../../src/ingest/batcher.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('requests submitted together run as one batch; results go back to their own callers, in order', async () => {
  const runs: number[][] = [];
  const b = new Batcher<number, string>(async (xs) => {
    runs.push(xs);
    return xs.map((x) => `#${x}`);
  }, { maxBatch: 64, lanes: 1 });
  const out = await Promise.all([1, 2, 3, 4, 5].map((x) => b.submit(x)));
  expect(out).toEqual(['#1', '#2', '#3', '#4', '#5']);
  expect(runs).toEqual([[1, 2, 3, 4, 5]]);
  // alone, a request does not wait for company
  expect(await b.submit(9)).toBe('#9');
  expect(runs).toHaveLength(2);
});

test('while a batch is at the database, the next requests gather; maxBatch and lanes bound the runs', async () => {
  const runs: number[][] = [];
  let running = 0;
  let most = 0;
  const gates: (() => void)[] = [];
  const b = new Batcher<number, number>(async (xs) => {
    runs.push(xs);
    running++;
    most = Math.max(most, running);
    await new Promise<void>((r) => gates.push(r));
    running--;
    return xs;
  }, { maxBatch: 3, lanes: 2 });
  const all = Array.from({ length: 10 }, (_, i) => b.submit(i));
  await tick();
  expect(runs).toEqual([[0, 1, 2], [3, 4, 5]]); // two lanes busy, the rest waits
  expect(b.waiting).toBe(4);
  while (gates.length) {
    gates.shift()!();
    await tick();
    await tick();
  }
  expect(await Promise.all(all)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  expect(runs.flat()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  expect(runs.every((r) => r.length <= 3)).toBe(true);
  expect(most).toBe(2);
});

test('requests waiting together are shared among the free lanes, not all put in the first', async () => {
  const runs: number[][] = [];
  const gates: (() => void)[] = [];
  const b = new Batcher<number, number>(async (xs) => {
    runs.push(xs);
    await new Promise<void>((r) => gates.push(r));
    return xs;
  }, { maxBatch: 64, lanes: 2 });
  const first = Array.from({ length: 8 }, (_, i) => b.submit(i));
  await tick();
  expect(runs).toEqual([[0, 1, 2, 3], [4, 5, 6, 7]]);
  // one lane free again: what waits goes to it whole (up to maxBatch)
  const more = Array.from({ length: 5 }, (_, i) => b.submit(10 + i));
  gates.shift()!();
  await tick();
  await tick();
  expect(runs[2]).toEqual([10, 11, 12, 13, 14]);
  while (gates.length) {
    gates.shift()!();
    await tick();
  }
  expect(await Promise.all([...first, ...more])).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14]);
});

test('an Error result fails only its item; a thrown batch fails every item of that batch and not the next', async () => {
  let fail = true;
  const b = new Batcher<number, number>(async (xs) => {
    if (xs.includes(13) && fail) {
      fail = false;
      throw new Error('database gone');
    }
    return xs.map((x) => (x % 2 ? new Error(`odd ${x}`) : x));
  }, { maxBatch: 10, lanes: 1 });
  const settled = await Promise.allSettled([2, 3, 4].map((x) => b.submit(x)));
  expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
  expect((settled[1] as PromiseRejectedResult).reason.message).toBe('odd 3');
  const batch = await Promise.allSettled([12, 13].map((x) => b.submit(x)));
  expect(batch.map((s) => (s.status === 'rejected' ? s.reason.message : s.value))).toEqual(['database gone', 'database gone']);
  expect(await b.submit(14)).toBe(14);
});
