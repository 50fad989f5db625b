/**
 * A small MLLP client for tests, the benchmark and the CLI: sends framed messages and collects the ACK payloads
 * in the order they arrive (MLLP answers in order on one connection).
 *
 * @see HL7 v2.5.1 Appendix C.4 (MLLP release 2)
 */
import net from 'node:net';
import tls from 'node:tls';
import { Deframer, frame } from './framing.js';

export interface MllpClient {
  /** sends one message and resolves with the next ACK payload */
  send(message: Buffer | string): Promise<Buffer>;
  /** writes raw bytes, unframed (for framing tests) */
  writeRaw(bytes: Buffer): void;
  /** the next ACK payload received, whatever was sent */
  next(): Promise<Buffer>;
  /** ends the connection (half-close) and resolves once it is flushed */
  close(): Promise<void>;
  socket: net.Socket;
}

/**
 * Opens one MLLP connection (over TLS when `opts.tls` is given: CA, client certificate and key).
 * Strings are sent as UTF-8; pass a Buffer for another charset.
 */
export function connectMllp(host: string, port: number, opts: { tls?: tls.ConnectionOptions } = {}): Promise<MllpClient> {
  return new Promise((resolve, reject) => {
    const socket: net.Socket = opts.tls ? tls.connect({ host, port, ...opts.tls }) : net.connect(port, host);
    socket.setNoDelay(true);
    const deframer = new Deframer(64 * 1024 * 1024);
    const received: Buffer[] = [];
    const waiting: { resolve: (b: Buffer) => void; reject: (e: Error) => void }[] = [];
    let ended: Error | undefined;
    socket.on('data', (chunk: Buffer) => {
      for (const ack of deframer.push(chunk)) {
        const w = waiting.shift();
        if (w) w.resolve(ack);
        else received.push(ack);
      }
    });
    const fail = (e: Error): void => {
      ended ??= e;
      for (const w of waiting.splice(0)) w.reject(e);
    };
    socket.on('close', () => fail(new Error('MLLP connection closed before the ACK arrived')));
    socket.on('error', (e) => fail(e));
    socket.once('error', reject);
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
      socket.off('error', reject);
      const next = (): Promise<Buffer> =>
        new Promise((res, rej) => {
          const r = received.shift();
          if (r) return res(r);
          if (ended) return rej(ended);
          waiting.push({ resolve: res, reject: rej });
        });
      resolve({
        socket,
        next,
        send(message) {
          socket.write(frame(message));
          return next();
        },
        writeRaw: (bytes) => void socket.write(bytes),
        close: () => new Promise((res) => socket.end(() => res())),
      });
    });
  });
}

/**
 * Sends messages over one connection and returns their ACK payloads, in order.
 * @param opts.pipeline write all messages at once instead of waiting for each ACK (default: one at a time)
 */
export async function sendMessages(host: string, port: number, messages: (Buffer | string)[], opts: { pipeline?: boolean } = {}): Promise<Buffer[]> {
  const client = await connectMllp(host, port);
  try {
    const acks: Buffer[] = [];
    if (opts.pipeline) {
      client.writeRaw(Buffer.concat(messages.map((m) => frame(m))));
      for (let i = 0; i < messages.length; i++) acks.push(await client.next());
    } else {
      for (const m of messages) acks.push(await client.send(m));
    }
    return acks;
  } finally {
    await client.close();
  }
}
