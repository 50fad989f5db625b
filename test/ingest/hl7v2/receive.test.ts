/**
 * The receive path with in-memory fakes: decode → store (durable) → dedupe → process → ACK → saveAck.
 * HL7 v2.5.1 ch. 2 §2.9 (acknowledgments; MSH-10 duplicates → table 0357 code 205).
 */
import crypto from 'node:crypto';
import { jest } from '@jest/globals';
import iconv from 'iconv-lite';
import { OutcomeError } from '../../../src/fhir/outcome.js';
import { silentLogger } from '../../../src/log.js';
import { createHl7Receiver, type StoreMeta, type StoreResult } from '../../../src/ingest/hl7v2/receive.js';
import type { ProcessOutcome } from '../../../src/ingest/hl7v2/types.js';

const msg = (id: string, opts: { charset?: string; name?: string; acks?: [string, string] } = {}) =>
  `MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|CARE_GW|TARTUMAA|20261110120000||ADT^A08^ADT_A01|${id}|P|2.5.1|||${opts.acks?.[0] ?? ''}|${opts.acks?.[1] ?? ''}||${opts.charset ?? ''}\r` +
  `PID|1||37302102711^^^EE^NI||${opts.name ?? 'Tamm'}^Jüri`;

const field = (ack: string, seg: string, n: number) => {
  const line = ack.split('\r').find((l) => l.startsWith(`${seg}|`)) ?? '';
  return (seg === 'MSH' ? ['MSH', '|', ...line.split('|').slice(1)] : line.split('|'))[n] ?? '';
};

/** A fake store: a Map keyed by sender + control id, as the lead's inbox dedupes. */
function fakes(opts: { process?: (id: string, text: string) => Promise<ProcessOutcome>; charset?: string } = {}) {
  const rows = new Map<string, { raw: Buffer; meta: StoreMeta; ack?: Buffer; code?: string }>();
  const byKey = new Map<string, string>();
  const calls: string[] = [];
  const processed: { id: string; text: string }[] = [];
  let n = 0;
  const store = jest.fn(async (raw: Buffer, meta: StoreMeta): Promise<StoreResult> => {
    calls.push('store');
    const key = `${meta.sender}#${meta.controlId}`;
    const earlier = meta.rejected || !meta.controlId ? undefined : byKey.get(key);
    if (earlier) {
      const row = rows.get(earlier)!;
      if (row.meta.contentHash === meta.contentHash) return { duplicate: 'same', id: earlier, storedAck: row.ack };
    }
    const id = `in-${++n}`;
    rows.set(id, { raw, meta });
    if (!earlier && meta.controlId && !meta.rejected) byKey.set(key, id);
    return { duplicate: earlier ? 'different' : 'none', id };
  });
  const process = jest.fn(async (id: string, text: string): Promise<ProcessOutcome> => {
    calls.push('process');
    processed.push({ id, text });
    return opts.process ? opts.process(id, text) : { code: 'AA', errors: [] };
  });
  const saveAck = jest.fn(async (id: string, ack: Buffer, code: string) => {
    calls.push('saveAck');
    Object.assign(rows.get(id)!, { ack, code });
  });
  const receive = createHl7Receiver({ store, process, saveAck, defaultCharset: opts.charset ?? 'utf-8', logger: silentLogger });
  return { receive, store, process, saveAck, rows, calls, processed };
}

test('AA: stored first (with sender, control id, sha256, charset, channel), then processed, then the ACK saved', async () => {
  const f = fakes();
  const raw = Buffer.from(msg('C-1'), 'utf8');
  const r = await f.receive(raw, 'mllp', '10.0.0.5:40000');
  expect(f.calls).toEqual(['store', 'process', 'saveAck']);
  expect(f.store.mock.calls[0][0]).toBe(raw);
  expect(f.store.mock.calls[0][1]).toEqual({
    sender: 'ELVA_HIS|ELVA_HAIGLA',
    controlId: 'C-1',
    contentHash: crypto.createHash('sha256').update(raw).digest('hex'),
    charset: 'utf-8',
    channel: 'mllp',
    peer: '10.0.0.5:40000',
  });
  expect(f.processed[0]).toEqual({ id: 'in-1', text: msg('C-1') });
  expect(r).toMatchObject({ code: 'AA', status: 200, id: 'in-1' });
  expect(field(r.ack!.toString('utf8'), 'MSA', 2)).toBe('C-1');
  expect(f.saveAck).toHaveBeenCalledWith('in-1', r.ack, 'AA');
});

test('the ACK is not produced until the store promise resolves', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const f = fakes();
  const inner = f.store.getMockImplementation()!;
  f.store.mockImplementation(async (raw, meta) => {
    await gate;
    return inner(raw, meta);
  });
  let done = false;
  const pending = f.receive(Buffer.from(msg('SLOW-STORE')), 'http').then((r) => ((done = true), r));
  await new Promise((r) => setTimeout(r, 50));
  expect(done).toBe(false);
  expect(f.process).not.toHaveBeenCalled();
  expect(f.saveAck).not.toHaveBeenCalled();
  release();
  const r = await pending;
  expect(r.code).toBe('AA');
  expect(f.calls).toEqual(['store', 'process', 'saveAck']);
});

test('a store that rejects gives AR and process is never called', async () => {
  const f = fakes();
  f.store.mockRejectedValue(new Error('disk full'));
  const r = await f.receive(Buffer.from(msg('C-DOWN')), 'mllp');
  expect(r.code).toBe('AR');
  expect(r.status).toBe(503);
  expect(r.id).toBeUndefined();
  const ack = r.ack!.toString('utf8');
  expect(field(ack, 'MSA', 2)).toBe('C-DOWN');
  expect(field(ack, 'ERR', 8)).toMatch(/could not be stored/);
  expect(ack).not.toMatch(/disk full/); // internals stay in the log
  expect(f.process).not.toHaveBeenCalled();
  expect(f.saveAck).not.toHaveBeenCalled();

  f.store.mockImplementation(() => {
    throw new Error('synchronous throw');
  });
  expect((await f.receive(Buffer.from(msg('C-THROW')), 'mllp')).code).toBe('AR');
  expect(f.process).not.toHaveBeenCalled();
});

test('a retransmission with the same content replays the stored ACK without processing again', async () => {
  const f = fakes();
  const raw = Buffer.from(msg('C-2'));
  const first = await f.receive(raw, 'mllp');
  const again = await f.receive(Buffer.from(raw), 'mllp');
  expect(f.process).toHaveBeenCalledTimes(1);
  expect(again.ack!.equals(first.ack!)).toBe(true);
  expect(again).toMatchObject({ code: 'AA', status: 200, id: first.id });
  expect(again.ackText).toBe(first.ackText);
});

test('a retransmission whose first copy was never answered is processed again', async () => {
  const f = fakes();
  f.saveAck.mockRejectedValueOnce(new Error('crash before the ACK was saved'));
  const raw = Buffer.from(msg('C-3'));
  expect((await f.receive(raw, 'mllp')).code).toBe('AA'); // the ACK still goes out: the message is stored
  expect((await f.receive(raw, 'mllp')).code).toBe('AA');
  expect(f.process).toHaveBeenCalledTimes(2);
});

test('the same control id from the same sender with other content: AR with ERR 205, not processed', async () => {
  const f = fakes();
  await f.receive(Buffer.from(msg('C-4')), 'mllp');
  const r = await f.receive(Buffer.from(msg('C-4', { name: 'Kask' })), 'mllp');
  expect(f.process).toHaveBeenCalledTimes(1);
  expect(r.code).toBe('AR');
  expect(r.status).toBe(409);
  expect(f.rows.size).toBe(2); // the new bytes are kept
  const ack = r.ack!.toString();
  expect(field(ack, 'MSA', 2)).toBe('C-4');
  expect(field(ack, 'ERR', 2)).toBe('MSH^1^10');
  expect(field(ack, 'ERR', 3)).toBe('205^Duplicate key identifier^HL70357');
});

test('content errors from process: AE with ERR, status from CATEGORIES', async () => {
  const e = new OutcomeError('invalid', 'isikukood 37302102712: check digit should be 1', 'PID-3.1');
  const f = fakes({ process: async () => ({ code: 'AE', errors: [e] }) });
  const r = await f.receive(Buffer.from(msg('C-5')), 'http');
  expect(r).toMatchObject({ code: 'AE', status: 422 });
  expect(field(r.ackText, 'ERR', 2)).toBe('PID^1^3^1^1');
  expect(f.saveAck).toHaveBeenCalledWith(r.id, r.ack, 'AE');
});

test('a process that throws: AR, status 500, no internals in the ACK', async () => {
  const f = fakes({ process: async () => Promise.reject(new Error('null pointer in mapper')) });
  const r = await f.receive(Buffer.from(msg('C-6')), 'mllp');
  expect(r).toMatchObject({ code: 'AR', status: 500 });
  expect(r.ackText).not.toMatch(/null pointer/);
  expect(f.saveAck).toHaveBeenCalled();
});

test('Latin-1 bytes labelled UNICODE UTF-8: still stored (rejected), answered AE at MSH-18, not processed', async () => {
  const f = fakes();
  const raw = iconv.encode(msg('C-7', { charset: 'UNICODE UTF-8', name: 'Põder' }), 'latin1');
  const r = await f.receive(raw, 'mllp');
  expect(f.store).toHaveBeenCalledTimes(1);
  expect(f.store.mock.calls[0][0]).toBe(raw);
  expect(f.store.mock.calls[0][1]).toMatchObject({ sender: 'ELVA_HIS|ELVA_HAIGLA', controlId: 'C-7', charset: 'utf-8', rejected: expect.stringMatching(/UTF-8/) });
  expect(f.process).not.toHaveBeenCalled();
  expect(r).toMatchObject({ code: 'AE', status: 422 });
  expect(field(r.ackText, 'MSA', 2)).toBe('C-7');
  expect(field(r.ackText, 'ERR', 2)).toBe('MSH^1^18');
  expect(field(r.ackText, 'MSH', 18)).toBe('UNICODE UTF-8');
  expect(f.saveAck).toHaveBeenCalledWith(r.id, r.ack, 'AE');
});

test('an unknown MSH-18: stored, AR (unsupported), not processed', async () => {
  const f = fakes();
  const r = await f.receive(Buffer.from(msg('C-8', { charset: 'EBCDIC' })), 'http');
  expect(r).toMatchObject({ code: 'AR', status: 400 });
  expect(field(r.ackText, 'ERR', 3)).toBe('200^Unsupported message type^HL70357');
  expect(f.process).not.toHaveBeenCalled();
  expect(f.store).toHaveBeenCalledTimes(1);
});

test('no MSH at all: stored, AR with empty MSA-2, not processed', async () => {
  const f = fakes();
  const r = await f.receive(Buffer.from('PID|1||123\rPV1|1'), 'http');
  expect(f.store.mock.calls[0][1]).toMatchObject({ sender: '', controlId: '', rejected: expect.stringMatching(/MSH/) });
  expect(r).toMatchObject({ code: 'AR', status: 400 });
  expect(field(r.ackText, 'MSA', 1)).toBe('AR');
  expect(field(r.ackText, 'MSA', 2)).toBe('');
  expect(f.process).not.toHaveBeenCalled();
});

test('windows-1257 with empty MSH-18 and that default: Estonian letters reach process and come back in the ACK', async () => {
  const letters = 'õäöüšžÕÄÖÜŠŽ';
  const f = fakes({
    charset: 'windows-1257',
    process: async () => ({ code: 'AE', errors: [new OutcomeError('invalid', `name "${letters}" rejected`, 'PID-5')] }),
  });
  const raw = iconv.encode(msg('C-9', { name: letters }), 'windows-1257');
  const r = await f.receive(raw, 'mllp');
  expect(f.processed[0].text).toContain(`||${letters}^Jüri`);
  expect(f.store.mock.calls[0][1].charset).toBe('windows-1257');
  expect(field(iconv.decode(r.ack!, 'windows-1257'), 'ERR', 8)).toBe(`name "${letters}" rejected`);
  expect(r.ackText).toContain(letters);
});

test('MSH-16 = NE: no ACK bytes to send, but the ACK is saved and the text is there for HTTP', async () => {
  const f = fakes();
  const r = await f.receive(Buffer.from(msg('C-10', { acks: ['NE', 'NE'] })), 'mllp');
  expect(r.ack).toBeNull();
  expect(field(r.ackText, 'MSA', 1)).toBe('AA');
  expect(f.saveAck).toHaveBeenCalled();
  const er = await f.receive(Buffer.from(msg('C-11', { acks: ['NE', 'ER'] })), 'mllp');
  expect(er.ack).toBeNull();
  const f2 = fakes({ process: async () => ({ code: 'AE', errors: [new OutcomeError('invalid', 'bad', 'PID-3')] }) });
  expect((await f2.receive(Buffer.from(msg('C-12', { acks: ['NE', 'ER'] })), 'mllp')).ack).not.toBeNull();
});

test('ASCII with 8-bit bytes: processed, AA with an ERR warning at MSH-18', async () => {
  const f = fakes();
  const r = await f.receive(iconv.encode(msg('C-13', { charset: 'ASCII', name: 'Põld' }), 'latin1'), 'mllp');
  expect(f.processed[0].text).toContain('Põld');
  expect(r.code).toBe('AA');
  expect(field(r.ackText, 'ERR', 4)).toBe('W');
  expect(field(r.ackText, 'ERR', 2)).toBe('MSH^1^18');
});
