/**
 * MLLP over real sockets on port 0 (HL7 v2.5.1 Appendix C): split frames, joined frames, junk between frames,
 * oversize messages, ordering with reversed handler latencies, a peer that closes with messages pending, and a
 * graceful close.
 */
import net from 'node:net';
import { startMllpServer, frame, type MllpServer, type MllpHandler } from '../../src/mllp/server.js';
import { connectMllp } from '../../src/mllp/client.js';
import { buildAck } from '../../src/ingest/hl7v2/ack.js';
import { parseHl7 } from '../../src/ingest/hl7v2/parse.js';
import { value } from '../../src/ingest/hl7v2/message.js';
import { silentLogger } from '../../src/log.js';

const msg = (id: string, extra = '') => `MSH|^~\\&|HIS|ELVA|GW|TARTU|20261110120000||ADT^A08^ADT_A01|${id}|P|2.5.1\rPID|1||37302102711^^^EE^NI||Tamm^Jüri${extra}`;
const msa2 = (ack: Buffer) => value(parseHl7(ack.toString('utf8')).segments[1], 2);

describe('MLLP listener', () => {
  let server: MllpServer;
  const seen: string[] = [];
  let delays: Record<string, number> = {};

  const handler: MllpHandler = async (payload) => {
    const text = payload.toString('utf8');
    const id = parseHl7(text).controlId;
    await new Promise((r) => setTimeout(r, delays[id] ?? 0));
    seen.push(id);
    return Buffer.from(buildAck(text, { code: 'AA' }));
  };

  beforeAll(async () => {
    server = await startMllpServer({ host: '127.0.0.1', port: 0, maxMessageBytes: 4096, handler, logger: silentLogger });
  });
  afterAll(() => server.close());
  beforeEach(() => {
    seen.length = 0;
    delays = {};
  });

  test('a frame split into single bytes is reassembled', async () => {
    const c = await connectMllp('127.0.0.1', server.port);
    const bytes = frame(msg('SPLIT-1'));
    for (const b of bytes) {
      c.writeRaw(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    expect(msa2(await c.next())).toBe('SPLIT-1');
    await c.close();
  });

  test('three frames in one write get three ACKs, in order, junk between frames skipped', async () => {
    const c = await connectMllp('127.0.0.1', server.port);
    c.writeRaw(Buffer.concat([frame(msg('J-1')), Buffer.from('\r\nnoise'), frame(msg('J-2')), frame(msg('J-3'))]));
    const acks = [await c.next(), await c.next(), await c.next()];
    expect(acks.map(msa2)).toEqual(['J-1', 'J-2', 'J-3']);
    await c.close();
  });

  test('ACKs stay in order when the first message takes longer than the second', async () => {
    delays = { 'SLOW-1': 150, 'FAST-2': 0 };
    const c = await connectMllp('127.0.0.1', server.port);
    c.writeRaw(Buffer.concat([frame(msg('SLOW-1')), frame(msg('FAST-2'))]));
    expect([msa2(await c.next()), msa2(await c.next())]).toEqual(['SLOW-1', 'FAST-2']);
    expect(seen).toEqual(['SLOW-1', 'FAST-2']);
    await c.close();
  });

  test('a message over the size limit gets an AR and the connection is closed', async () => {
    const c = await connectMllp('127.0.0.1', server.port);
    const closed = new Promise((r) => c.socket.once('close', r));
    c.writeRaw(frame(msg('BIG-1', 'x'.repeat(10_000))));
    const ack = parseHl7((await c.next()).toString('utf8'));
    expect(value(ack.segments[1], 1)).toBe('AR');
    expect(value(ack.segments[1], 2)).toBe('BIG-1');
    await closed;
    expect(seen).not.toContain('BIG-1');
  });

  test('a peer that closes with a message in flight: it is still handled, and the server keeps serving', async () => {
    delays = { 'GONE-1': 100 };
    const raw = net.connect(server.port, '127.0.0.1');
    await new Promise((r) => raw.once('connect', r));
    raw.write(Buffer.concat([frame(msg('GONE-1')), Buffer.from([0x0b]), Buffer.from('MSH|^~\\&|partial')]));
    raw.destroy();
    await new Promise((r) => setTimeout(r, 250));
    expect(seen).toEqual(['GONE-1']);
    const c = await connectMllp('127.0.0.1', server.port);
    expect(msa2(await c.send(msg('AFTER-1')))).toBe('AFTER-1');
    await c.close();
  });

  test('a handler that fails answers AR instead of dropping the connection', async () => {
    const failing = await startMllpServer({
      host: '127.0.0.1',
      port: 0,
      maxMessageBytes: 4096,
      logger: silentLogger,
      handler: async () => Promise.reject(new Error('store down')),
    });
    const c = await connectMllp('127.0.0.1', failing.port);
    const ack = parseHl7((await c.send(msg('FAIL-1'))).toString('utf8'));
    expect(value(ack.segments[1], 1)).toBe('AR');
    expect(value(ack.segments[1], 2)).toBe('FAIL-1');
    await c.close();
    await failing.close();
  });
});

test('close() waits for the message being handled and sends its ACK before ending the connection', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const server = await startMllpServer({
    host: '127.0.0.1',
    port: 0,
    maxMessageBytes: 4096,
    logger: silentLogger,
    handler: async (p) => {
      await gate;
      return Buffer.from(buildAck(p.toString(), { code: 'AA' }));
    },
  });
  const c = await connectMllp('127.0.0.1', server.port);
  const ack = c.send(msg('CLOSE-1'));
  await new Promise((r) => setTimeout(r, 50));
  const closing = server.close();
  release();
  expect(msa2(await ack)).toBe('CLOSE-1');
  await closing;
});
