/** A small MLLP client for tests, benchmarks and the CLI: sends framed messages and collects the ACKs in order. */
import net from 'node:net';
import { Deframer, frame } from './server.js';

export interface MllpClient {
  /** sends one message and resolves with its ACK payload */
  send(message: Buffer | string): Promise<Buffer>;
  /** writes raw bytes (for framing tests) */
  writeRaw(bytes: Buffer): void;
  /** the next ACK received, whatever was sent */
  next(): Promise<Buffer>;
  close(): Promise<void>;
  socket: net.Socket;
}

export function connectMllp(host: string, port: number): Promise<MllpClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    socket.setNoDelay(true);
    const deframer = new Deframer(64 * 1024 * 1024);
    const received: Buffer[] = [];
    const waiting: ((b: Buffer) => void)[] = [];
    const failures: ((e: Error) => void)[] = [];
    socket.on('data', (chunk) => {
      for (const ack of deframer.push(chunk)) {
        const w = waiting.shift();
        if (w) w(ack);
        else received.push(ack);
      }
    });
    socket.on('close', () => failures.splice(0).forEach((f) => f(new Error('connection closed'))));
    socket.once('error', reject);
    socket.once('connect', () => {
      const next = (): Promise<Buffer> =>
        new Promise((res, rej) => {
          const r = received.shift();
          if (r) return res(r);
          waiting.push(res);
          failures.push(rej);
        });
      resolve({
        socket,
        next,
        send(message) {
          socket.write(frame(typeof message === 'string' ? Buffer.from(message, 'utf8') : message));
          return next();
        },
        writeRaw: (bytes) => socket.write(bytes),
        close: () => new Promise((res) => socket.end(() => res())),
      });
    });
  });
}
