/**
 * MLLP over real sockets on port 0 (HL7 v2.5.1 Appendix C.4, MLLP release 2): split frames, joined frames, junk
 * between frames, oversize messages, ordering with reversed handler latencies, a peer that closes with messages
 * pending, a failing handler, graceful close — and the receive path end to end for charsets.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import iconv from 'iconv-lite';
import { startMllpServer, frame, type MllpServer, type MllpHandler } from '../../src/mllp/server.js';
import { connectMllp, sendMessages } from '../../src/mllp/client.js';
import { buildAck, readMsh } from '../../src/hl7v2/ack.js';
import { createHl7Receiver, type StoreMeta } from '../../src/ingest/hl7v2/receive.js';
import { createLogger, silentLogger } from '../../src/log.js';
import { requireCorpusDir, testCorpus } from '../helpers/corpus.js';
import { largeMdm } from '../fixtures/hl7v2/messages.js';

const HOST = '127.0.0.1';
const msg = (id: string, extra = '') => `MSH|^~\\&|HIS|ELVA|GW|TARTU|20261110120000||ADT^A08^ADT_A01|${id}|P|2.5.1\rPID|1||37302102711^^^EE^NI||Tamm^Jüri${extra}`;
const seg = (ack: Buffer | string, name: string) =>
  (typeof ack === 'string' ? ack : ack.toString('latin1'))
    .split('\r')
    .find((l) => l.startsWith(`${name}|`))
    ?.split('|') ?? [];
const msa = (ack: Buffer) => seg(ack, 'MSA').slice(1, 3);
const msa2 = (ack: Buffer) => seg(ack, 'MSA')[2];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const closedPromise = (s: net.Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));

describe('MLLP listener', () => {
  let server: MllpServer;
  const seen: string[] = [];
  let delays: Record<string, number> = {};

  const handler: MllpHandler = async (payload) => {
    const text = payload.toString('utf8');
    const id = readMsh(text)!.controlId;
    await sleep(delays[id] ?? 0);
    seen.push(id);
    if (id.startsWith('SILENT')) return null;
    return Buffer.from(buildAck(text, { code: 'AA' }));
  };

  beforeAll(async () => {
    server = await startMllpServer({ host: HOST, port: 0, maxMessageBytes: 16 * 1024, handler, logger: silentLogger });
  });
  afterAll(() => server.close());
  beforeEach(() => {
    seen.length = 0;
    delays = {};
  });

  test('listens on an ephemeral port', () => {
    expect(server.port).toBeGreaterThan(0);
  });

  test('a frame written one byte at a time is reassembled', async () => {
    const c = await connectMllp(HOST, server.port);
    for (const b of frame(msg('SPLIT-1'))) {
      c.writeRaw(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    expect(msa(await c.next())).toEqual(['AA', 'SPLIT-1']);
    await c.close();
  });

  test('two frames in one write get two ACKs', async () => {
    const c = await connectMllp(HOST, server.port);
    c.writeRaw(Buffer.concat([frame(msg('TWO-1')), frame(msg('TWO-2'))]));
    expect([msa2(await c.next()), msa2(await c.next())]).toEqual(['TWO-1', 'TWO-2']);
    await c.close();
  });

  test('three frames in one write with junk between them: three ACKs in order', async () => {
    const c = await connectMllp(HOST, server.port);
    c.writeRaw(Buffer.concat([Buffer.from('\r\n'), frame(msg('J-1')), Buffer.from('noise\r\n'), frame(msg('J-2')), Buffer.from([0x1c, 0x0d]), frame(msg('J-3'))]));
    expect([msa2(await c.next()), msa2(await c.next()), msa2(await c.next())]).toEqual(['J-1', 'J-2', 'J-3']);
    await c.close();
  });

  test('ACKs stay in order, each matching its message, when message 1 is slow and message 2 fast', async () => {
    delays = { 'SLOW-1': 200, 'FAST-2': 0, 'FAST-3': 0 };
    const acks = await sendMessages(HOST, server.port, [msg('SLOW-1'), msg('FAST-2'), msg('FAST-3')], { pipeline: true });
    expect(acks.map(msa2)).toEqual(['SLOW-1', 'FAST-2', 'FAST-3']);
    expect(seen).toEqual(['SLOW-1', 'FAST-2', 'FAST-3']);
  });

  test('a slow message on one connection does not hold up another connection', async () => {
    delays = { 'HOLD-1': 300 };
    const a = await connectMllp(HOST, server.port);
    const b = await connectMllp(HOST, server.port);
    const order: string[] = [];
    const slow = a.send(msg('HOLD-1')).then((ack) => order.push(msa2(ack)));
    await sleep(20);
    const fast = b.send(msg('QUICK-1')).then((ack) => order.push(msa2(ack)));
    await Promise.all([slow, fast]);
    expect(order).toEqual(['QUICK-1', 'HOLD-1']);
    await Promise.all([a.close(), b.close()]);
  });

  test('a handler that returns null sends nothing for that message; the next ACK still matches its message', async () => {
    const c = await connectMllp(HOST, server.port);
    c.writeRaw(Buffer.concat([frame(msg('SILENT-1')), frame(msg('LOUD-2'))]));
    expect(msa2(await c.next())).toBe('LOUD-2');
    expect(seen).toEqual(['SILENT-1', 'LOUD-2']);
    await c.close();
  });

  test('a message over the size limit gets an AR (from its MSH) and the connection is closed; the server stays up', async () => {
    const large = Buffer.from(largeMdm('BIG-1', 64), 'utf8');
    expect(large.length).toBeGreaterThan(16 * 1024);
    const controlId = readMsh(large.toString('latin1'))!.controlId;
    const c = await connectMllp(HOST, server.port);
    const closed = closedPromise(c.socket);
    c.writeRaw(Buffer.concat([frame(msg('BEFORE-BIG')), frame(large), frame(msg('AFTER-BIG'))]));
    expect(msa2(await c.next())).toBe('BEFORE-BIG'); // what came before is still answered, in order
    const ar = await c.next();
    expect(msa(ar)).toEqual(['AR', controlId]);
    expect(seg(ar, 'ERR')[3]).toBe('100^Segment sequence error^HL70357');
    expect(seg(ar, 'ERR')[8]).toMatch(/exceeds the limit of 16384 bytes/);
    await closed;
    expect(seen).toEqual(['BEFORE-BIG']);
    expect(msa2((await sendMessages(HOST, server.port, [msg('NEXT-1')]))[0])).toBe('NEXT-1');
  });

  test('an oversize frame that never ends is refused as it grows', async () => {
    const c = await connectMllp(HOST, server.port);
    const closed = closedPromise(c.socket);
    c.writeRaw(Buffer.concat([Buffer.from([0x0b]), Buffer.from(msg('ENDLESS-1', 'x'.repeat(20_000)))]));
    expect(msa(await c.next())).toEqual(['AR', 'ENDLESS-1']);
    await closed;
  });

  test('a peer that closes with messages pending: the in-flight one completes, the partial frame is dropped, new connections work', async () => {
    delays = { 'GONE-1': 150 };
    const raw = net.connect(server.port, HOST);
    await new Promise((r) => raw.once('connect', r));
    raw.write(Buffer.concat([frame(msg('GONE-1')), Buffer.from([0x0b]), Buffer.from('MSH|^~\\&|partial')]));
    await sleep(20);
    raw.destroy();
    await sleep(300);
    expect(seen).toEqual(['GONE-1']);
    const acks = await sendMessages(HOST, server.port, [msg('AFTER-1'), msg('AFTER-2')]);
    expect(acks.map(msa2)).toEqual(['AFTER-1', 'AFTER-2']);
  });
});

test('a handler that throws answers AR with MSA-2 and keeps the connection open', async () => {
  let calls = 0;
  const server = await startMllpServer({
    host: HOST,
    port: 0,
    maxMessageBytes: 4096,
    logger: silentLogger,
    handler: async (p) => {
      if (++calls === 1) throw new Error('store down: secret detail');
      return Buffer.from(buildAck(p.toString(), { code: 'AA' }));
    },
  });
  const c = await connectMllp(HOST, server.port);
  const ar = await c.send(msg('FAIL-1'));
  expect(msa(ar)).toEqual(['AR', 'FAIL-1']);
  expect(ar.toString()).not.toMatch(/secret/);
  expect(msa(await c.send(msg('OK-2')))).toEqual(['AA', 'OK-2']);
  await c.close();
  await server.close();
});

test('close() stops accepting, waits for the message in flight and sends its ACK, then ends the connection', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let stored = false;
  const server = await startMllpServer({
    host: HOST,
    port: 0,
    maxMessageBytes: 4096,
    logger: silentLogger,
    handler: async (p) => {
      await gate;
      stored = true;
      return Buffer.from(buildAck(p.toString(), { code: 'AA' }));
    },
  });
  const c = await connectMllp(HOST, server.port);
  const closed = closedPromise(c.socket);
  const ack = c.send(msg('CLOSE-1'));
  await sleep(50);
  let closeDone = false;
  const closing = server.close().then(() => (closeDone = true));
  await sleep(50);
  expect(closeDone).toBe(false); // still waiting for the handler
  await expect(connectMllp(HOST, server.port)).rejects.toThrow(); // no longer accepting
  release();
  expect(msa2(await ack)).toBe('CLOSE-1');
  expect(stored).toBe(true);
  await closed; // the server ended the connection
  await closing;
});

describe('end to end with the receive path (fake store)', () => {
  let server: MllpServer;
  const stored: { raw: Buffer; meta: StoreMeta }[] = [];
  const texts: string[] = [];
  const logLines: string[] = [];
  const logger = createLogger('info', {}, (l) => logLines.push(l));

  beforeAll(async () => {
    const receive = createHl7Receiver({
      store: async (raw, meta) => {
        stored.push({ raw, meta });
        return { duplicate: 'none', id: `in-${stored.length}` };
      },
      process: async (_id, text) => {
        texts.push(text);
        return { code: 'AA', errors: [] };
      },
      saveAck: async () => undefined,
      defaultCharset: 'windows-1257',
      logger,
    });
    server = await startMllpServer({
      host: HOST,
      port: 0,
      maxMessageBytes: 64 * 1024,
      logger,
      handler: async (payload, peer) => (await receive(payload, 'mllp', `${peer.remoteAddress}:${peer.remotePort}`)).ack,
    });
  });
  afterAll(() => server.close());

  test('Latin-1 bytes with MSH-18 UNICODE UTF-8: AE at MSH-18, stored, not garbled into processing', async () => {
    const text = `MSH|^~\\&|HIS|ELVA|GW|TARTU|20261110120000||ADT^A08^ADT_A01|WRONG-CS|P|2.5.1||||||UNICODE UTF-8\rPID|1||1^^^EE^NI||Põld^Jüri`;
    const [ack] = await sendMessages(HOST, server.port, [iconv.encode(text, 'latin1')]);
    expect(msa(ack)).toEqual(['AE', 'WRONG-CS']);
    expect(seg(ack, 'ERR')[2]).toBe('MSH^1^18');
    expect(seg(ack, 'ERR')[8]).toMatch(/not valid UTF-8/);
    expect(stored.at(-1)!.meta).toMatchObject({ controlId: 'WRONG-CS', rejected: expect.any(String) });
    expect(stored.at(-1)!.meta.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(texts.some((t) => t.includes('WRONG-CS'))).toBe(false);
  });

  test('windows-1257 with empty MSH-18 and default windows-1257: Estonian letters intact', async () => {
    const letters = 'õäöüšžÕÄÖÜŠŽ';
    const text = `MSH|^~\\&|HIS|ELVA|GW|TARTU|20261110120000||ADT^A08^ADT_A01|BALTIC-1|P|2.5.1\rPID|1||1^^^EE^NI||${letters}^Jüri`;
    const [ack] = await sendMessages(HOST, server.port, [iconv.encode(text, 'windows-1257')]);
    expect(msa(ack)).toEqual(['AA', 'BALTIC-1']);
    expect(texts.at(-1)).toBe(text);
  });

  testCorpus('hl7v2/microsoft-fhir-converter', 'corpus messages over one pipelined connection: one AA each, MSA-2 = MSH-10, in order', async () => {
    const ROOT = requireCorpusDir('hl7v2/microsoft-fhir-converter');
    const files = fs.readdirSync(ROOT).filter((f) => /^ADT-A0\d-0\d\.hl7$/.test(f)).sort();
    const payloads = files.map((f) => fs.readFileSync(path.join(ROOT, f)));
    const acks = await sendMessages(HOST, server.port, payloads, { pipeline: true });
    expect(files.length).toBeGreaterThan(5);
    expect(acks).toHaveLength(files.length);
    acks.forEach((ack, i) => {
      expect(msa(ack)).toEqual(['AA', readMsh(payloads[i].toString('latin1').replace(/^\uFEFF|^\xEF\xBB\xBF/, ''))!.controlId]);
    });
  });

  test('logs at info and above carry control ids, sizes and peers, never message content', () => {
    expect(logLines.length).toBeGreaterThan(0);
    const all = logLines.join('\n');
    expect(all).toContain('BALTIC-1');
    expect(all).not.toMatch(/Põld|Jüri|PID\|/);
    expect(all).not.toContain('õäöüšž');
  });
});
