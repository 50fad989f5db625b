/**
 * HL7_ACK_AFTER=conversion: the AA goes back once the message is converted, its resources passed the store's checks
 * and it is stored with its ACK; the resources are committed in the background. Through the gateway on PostgreSQL
 * (the embedded store answers after the commit instead), and the receiver itself on every backend: what is answered, that
 * everything acknowledged reaches the shared plan, refusals still answered AE/AR at once, retransmissions, the
 * backlog, backpressure, a failing background commit handing the entry back to the inbox worker, and close()
 * waiting for the background.
 */
import type { CarePlan } from '@medplum/fhirtypes';
import { connectMllp } from '../../../src/mllp/client.js';
import { parseHl7 } from '../../../src/hl7v2/parse.js';
import { value, segmentsNamed } from '../../../src/hl7v2/message.js';
import { patientIdFor } from '../../../src/mapping/hl7v2/ids.js';
import { planIdFor } from '../../../src/careplan/assemble.js';
import { SYSTEMS, isikukoodCheckDigit } from '../../../src/fhir/identifiers.js';
import { Hl7Receiver } from '../../../src/ingest/hl7v2/receiver.js';
import type { Hl7Item, ProcessOutcome } from '../../../src/ingest/hl7v2/types.js';
import { convertMessage, hl7BatchProcessor } from '../../../src/ingest/hl7v2/process.js';
import { silentLogger } from '../../../src/log.js';
import { loadConfig } from '../../../src/config.js';
import type { Store } from '../../../src/store/index.js';
import { backends, pgliteBackend, type Backend } from '../../helpers/backends.js';
import { startTestGateway, useGateway } from '../../helpers/gateway.js';
import { eeDischarge } from '../../fixtures/hl7v2/messages.js';

/** A valid isikukood for test person n (women born 1950, serial n). */
function person(n: number): string {
  const ten = `45001${String(1 + (n % 28)).padStart(2, '0')}${String(n).padStart(3, '0')}`;
  return ten + isikukoodCheckDigit(ten);
}

function deferred(): { promise: Promise<void>; release: () => void } {
  let release!: () => void;
  const promise = new Promise<void>((r) => (release = r));
  return { promise, release };
}

// through the gateway: PostgreSQL only (on the embedded store the gateway answers after the commit, tested below)
const onPostgres = backends().filter(([name]) => name === 'postgres');
(onPostgres.length ? describe.each(onPostgres) : describe.skip.each([['postgres', pgliteBackend]]))('ACK after conversion, through the gateway on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend, { HL7_ACK_AFTER: 'conversion' });

  const post = async (message: string) => {
    const res = await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'x-application/hl7-v2+er7' }, body: message });
    const ack = parseHl7(await res.text());
    return { status: res.status, ack, msa: segmentsNamed(ack, 'MSA')[0], errs: segmentsNamed(ack, 'ERR'), inbox: res.headers.get('x-inbox-id') };
  };
  const entry = async (id: string) => (await (await fetch(`${ctx.url}/admin/messages/${id}`)).json()) as { status: string; produced: string[] };

  test('a discharge is answered AA and, once the background is through, is in the shared plan and the message log', async () => {
    const r = await post(eeDischarge({ controlId: 'EARLY-1', isikukood: '37302102711' }));
    expect(r.status).toBe(200);
    expect(value(r.msa, 1)).toBe('AA');
    expect(value(r.msa, 2)).toBe('EARLY-1');
    await ctx.gw.receiver.drain();
    expect(ctx.gw.receiver.backlog).toBe(0);
    const pid = patientIdFor(SYSTEMS.isikukood, '37302102711');
    const plan = (await (await fetch(`${ctx.base}/CarePlan/${planIdFor(pid)}`)).json()) as CarePlan;
    expect(plan.subject?.reference).toBe(`Patient/${pid}`);
    expect(plan.activity?.length).toBe(2);
    const e = await entry(r.inbox!);
    expect(e.status).toBe('processed');
    expect(e.produced).toEqual(expect.arrayContaining([expect.stringMatching(/^CarePlan\//)]));
  });

  test('content that is wrong is still answered AE at once, with its ERR, and nothing is written', async () => {
    const r = await post(eeDischarge({ controlId: 'EARLY-2', isikukood: '36805280108' }));
    expect(r.status).toBe(422);
    expect(value(r.msa, 1)).toBe('AE');
    expect([value(r.errs[0], 2, 1), value(r.errs[0], 2, 3)]).toEqual(['PID', '3']);
    expect(ctx.gw.receiver.backlog).toBe(0);
    const e = (await (await fetch(`${ctx.url}/admin/messages/${r.inbox}`)).json()) as { status: string; ack: string; outcome: { issue: { diagnostics?: string }[] } };
    expect(e.status).toBe('rejected');
    expect(e.ack).toContain('MSA|AE|EARLY-2');
    expect(JSON.stringify(e.outcome)).toMatch(/check digit/);
    expect((await fetch(`${ctx.base}/Patient/${patientIdFor(SYSTEMS.isikukood, '36805280108')}`)).status).toBe(404);
  });

  test('a retransmission replays the stored AA and writes nothing new', async () => {
    const first = await post(eeDischarge({ controlId: 'EARLY-3', isikukood: '36805280109' }));
    await ctx.gw.receiver.drain();
    const pid = patientIdFor(SYSTEMS.isikukood, '36805280109');
    const before = (await (await fetch(`${ctx.base}/CarePlan/${planIdFor(pid)}`)).json()) as CarePlan;
    const again = await post(eeDischarge({ controlId: 'EARLY-3', isikukood: '36805280109' }));
    expect(value(again.msa, 1)).toBe('AA');
    expect(again.ack.controlId).toBe(first.ack.controlId);
    expect(ctx.gw.receiver.backlog).toBe(0);
    const after = (await (await fetch(`${ctx.base}/CarePlan/${planIdFor(pid)}`)).json()) as CarePlan;
    expect(after.meta?.versionId).toBe(before.meta?.versionId);
  });

  test('MLLP from several connections at once: every message AA, and every one committed to its person', async () => {
    const people = Array.from({ length: 24 }, (_, i) => person(100 + i));
    const acks = await Promise.all(
      [0, 1, 2, 3].map(async (k) => {
        const c = await connectMllp('127.0.0.1', ctx.mllpPort);
        const out: string[] = [];
        for (let i = k; i < people.length; i += 4) out.push((await c.send(eeDischarge({ controlId: `BURST-${i}`, isikukood: people[i], visit: `VB-${i}` }))).toString('utf8'));
        await c.close();
        return out;
      }),
    );
    expect(acks.flat().every((a) => a.includes('MSA|AA|BURST-'))).toBe(true);
    await ctx.gw.receiver.drain();
    for (const ik of people) {
      const plan = await fetch(`${ctx.base}/CarePlan/${planIdFor(patientIdFor(SYSTEMS.isikukood, ik))}`);
      expect(plan.status).toBe(200);
    }
    const log = (await (await fetch(`${ctx.url}/admin/messages?channel=mllp&_count=100`)).json()) as { entries: { controlId: string; status: string }[] };
    const burst = log.entries.filter((e) => e.controlId.startsWith('BURST-'));
    expect(burst).toHaveLength(people.length);
    expect(burst.every((e) => e.status === 'processed')).toBe(true);
  });
});

describe('ACK after conversion asked of the embedded store', () => {
  const ctx = useGateway(pgliteBackend, { HL7_ACK_AFTER: 'conversion' });

  test('answers after the commit instead (its one connection would make ACKs later, not sooner)', async () => {
    const res = await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'x-application/hl7-v2+er7' }, body: eeDischarge({ controlId: 'EMB-1', isikukood: person(40), visit: 'VE-1' }) });
    expect(value(segmentsNamed(parseHl7(await res.text()), 'MSA')[0], 1)).toBe('AA');
    const e = (await (await fetch(`${ctx.url}/admin/messages/${res.headers.get('x-inbox-id')}`)).json()) as { status: string };
    expect(e.status).toBe('processed'); // already, at the ACK
    expect(ctx.gw.receiver.backlog).toBe(0);
  });
});

describe.each(backends())('ACK after conversion: the receiver and its background on %s', (_name, makeBackend) => {
  let backend: Backend;
  let store: Store;

  beforeAll(async () => {
    backend = makeBackend();
    store = await backend.open();
  });
  afterAll(async () => {
    await store.close();
    await backend.cleanup();
  });

  /** A receiver whose background commits wait for `gate` (then run for real), or fail with `fail`. */
  const receiverWith = (opts: { gate?: Promise<void>; fail?: Error; maxBackground?: number }) => {
    const real = hl7BatchProcessor(store);
    const seen: Hl7Item[][] = [];
    const receiver = new Hl7Receiver(
      store,
      async (items): Promise<(ProcessOutcome | Error)[]> => {
        seen.push(items);
        await opts.gate;
        if (opts.fail) throw opts.fail;
        return real(items);
      },
      { defaultCharset: 'utf-8', logger: silentLogger, ackAfter: 'conversion', convert: (t) => convertMessage(t, { validate: true }), maxBackground: opts.maxBackground },
    );
    return { receiver, seen };
  };

  test('the AA leaves before the commit; the background gets the conversion made for the ACK; drain waits for it', async () => {
    const gate = deferred();
    const { receiver, seen } = receiverWith({ gate: gate.promise });
    const r = await receiver.receive(Buffer.from(eeDischarge({ controlId: 'RCV-1', isikukood: person(1), visit: 'VR-1' })), 'http');
    expect(r.code).toBe('AA');
    expect(r.patientKey).toBe(patientIdFor(SYSTEMS.isikukood, person(1)));
    expect(receiver.backlog).toBe(1);
    // stored with its ACK in one transaction: a retransmission now would get this very AA
    const stored = await store.inbox.get(r.inboxId!);
    expect(stored?.status).toBe('processing');
    expect(stored?.ack).toBe(r.ackText);
    expect(stored?.ack).toContain('MSA|AA|RCV-1');
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((res) => setTimeout(res, 10)); // the batch starts on a later turn
    expect(seen[0][0].converted?.conv.patientId).toBe(r.patientKey);
    let drained = false;
    const draining = receiver.drain().then(() => (drained = true));
    await new Promise((res) => setTimeout(res, 50));
    expect(drained).toBe(false);
    gate.release();
    await draining;
    expect(receiver.backlog).toBe(0);
    expect((await store.inbox.get(r.inboxId!))?.status).toBe('processed');
    expect((await store.repo.read<CarePlan>('CarePlan', planIdFor(r.patientKey!))).subject?.reference).toBe(`Patient/${r.patientKey}`);
  });

  test('a background commit that fails hands the entry back to the inbox worker (status received)', async () => {
    const { receiver } = receiverWith({ fail: new Error('connection lost') });
    const r = await receiver.receive(Buffer.from(eeDischarge({ controlId: 'RCV-2', isikukood: person(2), visit: 'VR-2' })), 'http');
    expect(r.code).toBe('AA');
    await receiver.drain();
    expect((await store.inbox.get(r.inboxId!))?.status).toBe('received');
    await expect(store.repo.read('CarePlan', planIdFor(r.patientKey!))).rejects.toThrow(/not found/i);
  });

  test('past maxBackground messages waiting, the next ACK waits for its commit (backpressure)', async () => {
    const gate = deferred();
    const { receiver } = receiverWith({ gate: gate.promise, maxBackground: 1 });
    const first = await receiver.receive(Buffer.from(eeDischarge({ controlId: 'RCV-3', isikukood: person(3), visit: 'VR-3' })), 'http');
    expect(first.code).toBe('AA');
    let answered = false;
    const second = receiver.receive(Buffer.from(eeDischarge({ controlId: 'RCV-4', isikukood: person(4), visit: 'VR-4' })), 'http').then((r) => {
      answered = true;
      return r;
    });
    await new Promise((res) => setTimeout(res, 100));
    expect(answered).toBe(false);
    gate.release();
    const r = await second;
    expect(r.code).toBe('AA');
    // answered after its commit: the entry is processed by the time the ACK is back
    expect((await store.inbox.get(r.inboxId!))?.status).toBe('processed');
    await receiver.drain();
  });

  test('closing a gateway waits until everything it acknowledged is committed', async () => {
    // a gateway of its own on this store's data (the embedded store allows one process at a time: ours closes
    // meanwhile): acknowledged messages must be committed when close() resolves
    await store.close();
    const { gw, url } = await startTestGateway(backend, { HL7_ACK_AFTER: 'conversion' });
    const people = [person(20), person(21), person(22), person(23), person(24), person(25)];
    // each its own visit (one visit number for several people would make them all write one Encounter)
    const codes = await Promise.all(
      people.map(async (ik, i) => {
        const res = await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'x-application/hl7-v2+er7' }, body: eeDischarge({ controlId: `CLOSE-${i}`, isikukood: ik, visit: `VCL-${i}` }) });
        return value(segmentsNamed(parseHl7(await res.text()), 'MSA')[0], 1);
      }),
    );
    expect(codes.every((c) => c === 'AA')).toBe(true);
    await gw.close();
    store = await backend.reopen();
    for (const ik of people) expect((await store.repo.read<CarePlan>('CarePlan', planIdFor(patientIdFor(SYSTEMS.isikukood, ik)))).status).toBe('active');
  });
});

test('HL7_ACK_AFTER: commit by default, conversion when asked, anything else refused at start', () => {
  expect(loadConfig({}).hl7AckAfter).toBe('commit');
  expect(loadConfig({ HL7_ACK_AFTER: 'Conversion' }).hl7AckAfter).toBe('conversion');
  expect(() => loadConfig({ HL7_ACK_AFTER: 'receipt' })).toThrow(/HL7_ACK_AFTER must be commit\|conversion/);
});
