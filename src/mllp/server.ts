/**
 * MLLP listener: frames `0x0B … 0x1C 0x0D` over TCP, one ACK per message, in order.
 *
 * - Framing is robust to frames split across reads and to several frames in one read; bytes outside a frame
 *   are skipped. The buffer is bounded: a message past `maxMessageBytes` gets an AR and the connection is
 *   closed cleanly (the peer is out of step with us and cannot be trusted to resynchronise).
 * - Messages of one connection are handled strictly one after another, so ACKs go out in order and each
 *   matches its message (MSA-2 = MSH-10); other connections are not blocked.
 * - The handler stores the message durably before it resolves: an ACK never leaves before that.
 * - A peer that closes with messages pending: the message being handled is still stored; frames that never
 *   completed are discarded (they were never acknowledged).
 *
 * @see HL7 v2.5.1 Appendix C (MLLP release 2 framing), Medplum's @medplum/hl7 connection for the durability rule
 */
import net from 'node:net';
import type { Logger } from '../log.js';
import { OutcomeError } from '../fhir/outcome.js';
import { buildAck } from '../ingest/hl7v2/ack.js';
import { rawMsh } from '../ingest/hl7v2/decode.js';

export const VT = 0x0b;
export const FS = 0x1c;
export const CR = 0x0d;
const END = Buffer.from([FS, CR]);

export interface Peer {
  remoteAddress: string;
  remotePort: number;
  localPort: number;
}

/** Stores and processes one message; resolves with the ACK bytes to send (null: send none). */
export type MllpHandler = (payload: Buffer, peer: Peer) => Promise<Buffer | null>;

export interface MllpOptions {
  host: string;
  port: number;
  maxMessageBytes: number;
  handler: MllpHandler;
  logger: Logger;
}

export interface MllpServer {
  port: number;
  /** stop accepting, let in-flight messages finish and be acknowledged, then close every connection */
  close(): Promise<void>;
}

export function frame(payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return Buffer.concat([Buffer.from([VT]), body, Buffer.from([FS, CR])]);
}

/** Accumulates bytes and yields complete frame payloads; keeps an incomplete tail for the next read. */
export class Deframer {
  private buf: Buffer = Buffer.alloc(0);
  private inFrame = false;
  skipped = 0;

  constructor(private readonly max: number) {}

  /** Returns complete payloads; throws OutcomeError('too-large') when a frame grows past the limit. */
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Buffer[] = [];
    for (;;) {
      if (!this.inFrame) {
        const start = this.buf.indexOf(VT);
        if (start < 0) {
          this.skipped += this.buf.length;
          this.buf = Buffer.alloc(0);
          return out;
        }
        this.skipped += start;
        this.buf = this.buf.subarray(start + 1);
        this.inFrame = true;
      }
      const end = this.buf.indexOf(END);
      if (end < 0) {
        if (this.buf.length > this.max + 1) throw new OutcomeError('too-large', `message exceeds the limit of ${this.max} bytes`);
        return out;
      }
      const payload = this.buf.subarray(0, end);
      if (payload.length > this.max) throw new OutcomeError('too-large', `message of ${payload.length} bytes exceeds the limit of ${this.max} bytes`);
      out.push(Buffer.from(payload));
      this.buf = this.buf.subarray(end + 2);
      this.inFrame = false;
    }
  }

  /** bytes of an unfinished frame (what the connection had when it closed) */
  get pending(): number {
    return this.inFrame ? this.buf.length : 0;
  }

  /** the start of the unfinished frame, to build an AR from its MSH */
  get head(): Buffer {
    return this.buf.subarray(0, 2048);
  }
}

export async function startMllpServer(opts: MllpOptions): Promise<MllpServer> {
  const sockets = new Set<net.Socket>();
  const inFlight = new Set<Promise<void>>();
  let closing = false;

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true); // an ACK is one small write: do not let Nagle hold it back
    const peer: Peer = { remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0, localPort: socket.localPort ?? 0 };
    const log = opts.logger.child({ peer: `${peer.remoteAddress}:${peer.remotePort}` });
    const deframer = new Deframer(opts.maxMessageBytes);
    let chain: Promise<void> = Promise.resolve();
    log.debug('mllp connection opened');

    const handleOne = async (payload: Buffer): Promise<void> => {
      const started = performance.now();
      let ack: Buffer | null;
      try {
        ack = await opts.handler(payload, peer);
      } catch (err) {
        // the handler's own failure (e.g. the store is down): refuse, so the sender keeps the message and retries
        const e = err instanceof OutcomeError ? err : new OutcomeError('busy', 'the message could not be stored; send it again later');
        ack = frameless(buildAck(rawMsh(payload), { code: 'AR', errors: [e] }));
        log.warn('mllp handler failed', { category: e.category });
      }
      if (ack && !socket.destroyed) socket.write(frame(ack));
      log.debug('mllp message handled', { bytes: payload.length, ms: +(performance.now() - started).toFixed(1) });
    };

    socket.on('data', (chunk: Buffer) => {
      let payloads: Buffer[];
      try {
        payloads = deframer.push(chunk);
      } catch (err) {
        const e = err as OutcomeError;
        log.warn('mllp message too large; closing the connection', { limit: opts.maxMessageBytes });
        socket.pause();
        const ar = frameless(buildAck(rawMsh(deframer.head), { code: 'AR', errors: [e] }));
        // finish what was already queued, then answer AR and close
        chain = chain.then(() => new Promise<void>((resolve) => socket.end(frame(ar), () => resolve())));
        return;
      }
      if (deframer.skipped) {
        log.debug('mllp bytes outside a frame skipped', { bytes: deframer.skipped });
        deframer.skipped = 0;
      }
      for (const p of payloads) {
        const job = chain.then(() => handleOne(p));
        chain = job;
        inFlight.add(job);
        void job.finally(() => inFlight.delete(job));
      }
    });
    socket.on('close', () => {
      sockets.delete(socket);
      if (deframer.pending) log.info('mllp connection closed with an unfinished frame; it was never acknowledged', { bytes: deframer.pending });
    });
    socket.on('error', (err) => log.debug('mllp socket error', { error: err.message }));
    if (closing) socket.end();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    async close() {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      await Promise.allSettled([...inFlight]);
      for (const s of sockets) s.end();
      setTimeout(() => sockets.forEach((s) => s.destroy()), 2000).unref();
      await stopped;
    },
  };
}

function frameless(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}
