/**
 * The inbox: raw payloads stored before acknowledgement, retransmission detection, claiming work row by row,
 * and (PostgreSQL) two gateway instances on one database never processing an entry twice.
 */
import type { Patient } from '@medplum/fhirtypes';
import type { Store } from '../../src/store/index.js';
import { InboxWorker, type Processor } from '../../src/ingest/worker.js';
import { silentLogger } from '../../src/log.js';
import { backends, pgliteBackend, postgresBackend, PG_URL, useStore } from '../helpers/backends.js';

describe.each(backends())('inbox on %s', (_name, makeBackend) => {
  const suite = useStore(makeBackend);
  let store: Store;
  beforeAll(() => ({ store } = suite));

  test('stores the raw bytes exactly as received, with sender, control id and hash', async () => {
    const payload = Buffer.from([0x4d, 0x53, 0x48, 0x7c, 0xf5, 0xe4, 0x00, 0xff]); // not valid UTF-8 on purpose
    const { entry, duplicate } = await store.inbox.receive({ channel: 'mllp', payload, sender: 'HIS^ELVA', controlId: 'c-1', dedupe: true });
    expect(duplicate).toBe('none');
    expect(entry.status).toBe('processing');
    const back = await store.inbox.get(entry.id);
    expect(back?.payload.equals(payload)).toBe(true);
    expect(back).toMatchObject({ sender: 'HIS^ELVA', controlId: 'c-1', channel: 'mllp' });
  });

  test('a retransmission (same sender, control id, content) is recognised and not stored again', async () => {
    const payload = Buffer.from('MSH|^~\\&|A|B|C|D|20260101||ADT^A03|dup-1|P|2.5');
    const first = await store.inbox.receive({ channel: 'mllp', payload, sender: 'A^B', controlId: 'dup-1', dedupe: true });
    await store.inbox.finish(first.entry.id, { status: 'processed', ack: 'ACK-1' });
    const again = await store.inbox.receive({ channel: 'mllp', payload, sender: 'A^B', controlId: 'dup-1', dedupe: true });
    expect(again.duplicate).toBe('same');
    expect(again.entry.id).toBe(first.entry.id);
    expect(again.entry.ack).toBe('ACK-1');
  });

  test('the same control id with other content is kept, but rejected as a duplicate key', async () => {
    const a = Buffer.from('MSH|^~\\&|A|B|C|D|20260101||ADT^A03|dup-2|P|2.5\rPID|||1');
    const b = Buffer.from('MSH|^~\\&|A|B|C|D|20260101||ADT^A03|dup-2|P|2.5\rPID|||2');
    const first = await store.inbox.receive({ channel: 'mllp', payload: a, sender: 'A^B', controlId: 'dup-2', dedupe: true });
    const second = await store.inbox.receive({ channel: 'mllp', payload: b, sender: 'A^B', controlId: 'dup-2', dedupe: true });
    expect(second.duplicate).toBe('different');
    expect(second.entry.status).toBe('rejected');
    expect(second.entry.duplicateOf).toBe(first.entry.id);
    expect((await store.inbox.get(second.entry.id))?.payload.equals(b)).toBe(true);
  });

  test('receiveMany stores a batch in one go; retransmissions inside the batch are recognised like later ones', async () => {
    const msg = (n: string, pid: string) => Buffer.from(`MSH|^~\\&|A|B|C|D|20260101||ADT^A03|${n}|P|2.5\rPID|||${pid}`);
    const results = await store.inbox.receiveMany([
      { channel: 'mllp', payload: msg('b-1', '1'), sender: 'A^B', controlId: 'b-1', dedupe: true },
      { channel: 'mllp', payload: msg('b-2', '2'), sender: 'A^B', controlId: 'b-2', dedupe: true },
      { channel: 'mllp', payload: msg('b-1', '1'), sender: 'A^B', controlId: 'b-1', dedupe: true }, // same again
      { channel: 'mllp', payload: msg('b-2', '9'), sender: 'A^B', controlId: 'b-2', dedupe: true }, // other content
      { channel: 'mllp', payload: Buffer.from('not hl7'), rejectReason: 'no MSH' },
    ]);
    expect(results.map((r) => r.duplicate)).toEqual(['none', 'none', 'same', 'different', 'none']);
    expect(results[2].entry.id).toBe(results[0].entry.id);
    expect(results[3].entry).toMatchObject({ status: 'rejected', duplicateOf: results[1].entry.id });
    expect(results[4].entry.status).toBe('rejected');
    // every distinct payload is stored, byte for byte; the in-batch retransmission is not stored twice
    for (const i of [0, 1, 3, 4]) expect((await store.inbox.get(results[i].entry.id))?.payload.equals([msg('b-1', '1'), msg('b-2', '2'), null, msg('b-2', '9'), Buffer.from('not hl7')][i]!)).toBe(true);
    const listed = (await store.inbox.list({ limit: 500 })).filter((e) => e.controlId === 'b-1');
    expect(listed).toHaveLength(1);
    await store.inbox.finishMany([
      { id: results[0].entry.id, status: 'processed', produced: ['Patient/x'], patientKey: 'x' },
      { id: results[1].entry.id, status: 'rejected', reason: 'bad isikukood' },
    ]);
    await store.inbox.saveAcks([{ id: results[0].entry.id, ack: 'ACK-b1' }]);
    const again = await store.inbox.receive({ channel: 'mllp', payload: msg('b-1', '1'), sender: 'A^B', controlId: 'b-1', dedupe: true });
    expect(again).toMatchObject({ duplicate: 'same', entry: { id: results[0].entry.id, ack: 'ACK-b1', status: 'processed' } });
    expect((await store.inbox.get(results[1].entry.id))).toMatchObject({ status: 'rejected', reason: 'bad isikukood' });
  });

  test('the same message arriving twice at once (two batches side by side) is stored once, the other a retransmission', async () => {
    const msg = Buffer.from('MSH|^~\\&|A|B|C|D|20260101||ADT^A03|race-1|P|2.5\rPID|||1');
    const other = Buffer.from('MSH|^~\\&|A|B|C|D|20260101||ADT^A03|race-2|P|2.5\rPID|||2');
    for (let round = 0; round < 5; round++) {
      const a = { channel: 'mllp' as const, payload: Buffer.concat([msg, Buffer.from(String(round))]), sender: 'R^S', controlId: `race-1-${round}`, dedupe: true };
      const b = { channel: 'mllp' as const, payload: Buffer.concat([other, Buffer.from(String(round))]), sender: 'R^S', controlId: `race-2-${round}`, dedupe: true };
      const [x, y] = await Promise.all([store.inbox.receiveMany([a, b]), store.inbox.receiveMany([b, a])]);
      expect([x[0].duplicate, y[1].duplicate].sort()).toEqual(['none', 'same']);
      expect([x[1].duplicate, y[0].duplicate].sort()).toEqual(['none', 'same']);
      expect(x[0].entry.id).toBe(y[1].entry.id);
      expect((await store.inbox.list({ limit: 500 })).filter((e) => e.controlId === `race-1-${round}`)).toHaveLength(1);
    }
  });

  test('an ACK and an outcome given with a new entry are stored with it; not with a retransmission', async () => {
    const payload = Buffer.from('MSH|^~\\&|A|B|C|D|20260101||ADT^A03|ack-1|P|2.5');
    const outcome = { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'value' }] };
    const first = await store.inbox.receive({ channel: 'mllp', payload, sender: 'A^B', controlId: 'ack-1', dedupe: true, ack: 'MSA|AE|ack-1', rejectReason: 'bad', outcome });
    expect(first.entry).toMatchObject({ status: 'rejected', reason: 'bad', ack: 'MSA|AE|ack-1', outcome });
    expect(await store.inbox.get(first.entry.id)).toMatchObject({ status: 'rejected', ack: 'MSA|AE|ack-1', outcome });
    const again = await store.inbox.receive({ channel: 'mllp', payload, sender: 'A^B', controlId: 'ack-1', dedupe: true, ack: 'MSA|AE|other' });
    expect(again).toMatchObject({ duplicate: 'same', entry: { id: first.entry.id, ack: 'MSA|AE|ack-1' } });
  });

  test('the worker claims waiting entries and records what the processor produced', async () => {
    const { entry } = await store.inbox.receive({ channel: 'fhir', payload: Buffer.from('{}'), claim: false });
    const worker = new InboxWorker(store, { fhir: async () => ({ status: 'processed', produced: ['Patient/x/_history/1'] }) }, silentLogger);
    expect(await worker.drain()).toBeGreaterThanOrEqual(1);
    expect(await store.inbox.get(entry.id)).toMatchObject({ status: 'processed', produced: ['Patient/x/_history/1'], attempts: 1 });
  });

  test('a processor that throws marks the entry failed with its reason, and the list shows no payloads', async () => {
    const { entry } = await store.inbox.receive({ channel: 'social-care', payload: Buffer.from('a;b'), claim: false });
    const worker = new InboxWorker(store, { 'social-care': async () => Promise.reject(new Error('mapping missing')) }, silentLogger);
    await worker.drain();
    expect(await store.inbox.get(entry.id)).toMatchObject({ status: 'failed', reason: 'mapping missing' });
    const listed = await store.inbox.list({ status: 'failed' });
    expect(listed.map((e) => e.id)).toContain(entry.id);
    expect(Object.keys(listed[0])).not.toContain('payload');
  });

  test('an entry claimed by this instance is not claimed again while its lease runs; a claim records the instance', async () => {
    const { entry } = await store.inbox.receive({ channel: 'fhir', payload: Buffer.from('{"mine":1}') });
    expect(entry).toMatchObject({ status: 'processing', claimedBy: store.inbox.instance });
    expect(await store.inbox.get(entry.id)).toMatchObject({ status: 'processing', claimedBy: store.inbox.instance });
    for (let e = await store.inbox.claim(); e; e = await store.inbox.claim()) expect(e.id).not.toBe(entry.id);
    expect(await store.inbox.claimById(entry.id)).toBeUndefined();
    await store.inbox.finish(entry.id, { status: 'processed' });
  });
});

describe('embedded inbox: claims of an earlier process', () => {
  test('are taken over at once, lease or not (one process owns the directory)', async () => {
    const backend = pgliteBackend();
    const store = await backend.open();
    try {
      const { entry } = await store.inbox.receive({ channel: 'fhir', payload: Buffer.from('{}') });
      // as a process that died with the entry claimed would have left it, without the restart's reset
      await store.db.query(`UPDATE inbox SET claimed_by = 'gone-instance' WHERE id = $1`, [entry.id]);
      const taken = await store.inbox.claim();
      expect(taken).toMatchObject({ id: entry.id, status: 'processing', attempts: 2 });
    } finally {
      await store.close();
      await backend.cleanup();
    }
  });
});

/** Two stores on one fresh PostgreSQL schema (two gateway instances), closed and dropped however the test ends. */
async function withTwoInstances(fn: (a: Store, b: Store) => Promise<void>): Promise<void> {
  const backend = postgresBackend(PG_URL!);
  const a = await backend.open();
  const b = await backend.reopen();
  try {
    await fn(a, b);
  } finally {
    await a.close();
    await b.close();
    await backend.cleanup();
  }
}

(PG_URL ? describe : describe.skip)('two gateway instances on one PostgreSQL', () => {
  test('each entry is processed exactly once when two instances drain the inbox at the same time', () =>
    withTwoInstances(async (a, b) => {
      const n = 60;
      for (let i = 0; i < n; i++) await a.inbox.receive({ channel: 'fhir', payload: Buffer.from(`{"n":${i}}`), claim: false });
      const seen: string[] = [];
      const processor =
        (store: Store): Processor =>
        async (entry) => {
          seen.push(entry.id);
          const p: Patient = { resourceType: 'Patient', id: `inst-${entry.id}` };
          const r = await store.repo.update(p);
          return { status: 'processed', produced: [`Patient/${r.resource.id}`] };
        };
      const wa = new InboxWorker(a, { fhir: processor(a) }, silentLogger);
      const wb = new InboxWorker(b, { fhir: processor(b) }, silentLogger);
      const [na, nb] = await Promise.all([wa.drain(), wb.drain()]);
      expect(na + nb).toBe(n);
      expect(na).toBeGreaterThan(0);
      expect(nb).toBeGreaterThan(0);
      expect(new Set(seen).size).toBe(n);
      expect(seen).toHaveLength(n);
      const versions = await a.db.query<{ n: string }>(`SELECT count(*)::text AS n FROM resource_version WHERE resource_type = 'Patient'`);
      expect(Number(versions[0].n)).toBe(n); // one version each: nothing was processed twice
    }));

  test('an instance whose lock connection is cut takes its lock again, and its claims are again left alone', () =>
    withTwoInstances(async (a, b) => {
      // the backend holding a's liveness lock (a bigint advisory key shows in pg_locks as classid << 32 | objid)
      const holder = async (): Promise<number | undefined> =>
        (
          await b.db.query<{ pid: number }>(
            `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted
               AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('instance|' || $1::text, 0)`,
            [a.inbox.instance],
          )
        )[0]?.pid;
      await a.inbox.receive({ channel: 'fhir', payload: Buffer.from('{"cut":1}') });
      const pid = await holder();
      expect(pid).toBeDefined();
      await b.db.query(`SELECT pg_terminate_backend($1::int)`, [pid]);
      let again: number | undefined;
      for (let i = 0; i < 50 && (again === undefined || again === pid); i++) {
        await new Promise((r) => setTimeout(r, 100));
        again = await holder();
      }
      expect(again).toBeDefined();
      expect(again).not.toBe(pid);
      expect(await b.inbox.claim()).toBeUndefined();
    }));

  test("an instance's claims are left alone while it lives and taken over as soon as it is gone, lease or not", () =>
    withTwoInstances(async (a, b) => {
      const { entry } = await a.inbox.receive({ channel: 'fhir', payload: Buffer.from('{"a":1}') }); // claimed by a, lease 120 s
      await a.inbox.receive({ channel: 'fhir', payload: Buffer.from('{"a":2}'), claim: false });
      const byA = await a.inbox.claim(); // a claim made by the worker names its instance too
      expect(byA?.status).toBe('processing');
      expect(await b.inbox.claim()).toBeUndefined();
      expect(await b.inbox.claimById(entry.id)).toBeUndefined();

      await a.close(); // lets go of its liveness lock, as a killed process's connection would
      const first = await b.inbox.claim();
      const second = await b.inbox.claim();
      expect(new Set([first?.id, second?.id])).toEqual(new Set([entry.id, byA!.id]));
      expect(byA?.claimedBy).toBe(a.inbox.instance);
      expect(first).toMatchObject({ status: 'processing', attempts: 2, claimedBy: b.inbox.instance });
      expect(second?.claimedBy).toBe(b.inbox.instance);
    }));
});
