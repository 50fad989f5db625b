/**
 * MLLP listener: HL7 v2 messages framed `0x0B … 0x1C 0x0D` over TCP; one ACK per message, in order.
 *
 * - Framing (framing.ts) copes with frames split across reads, several frames in one read and junk between
 *   frames. The buffer is bounded: a frame past `maxMessageBytes` gets an AR (built from whatever MSH was read)
 *   and the connection is closed cleanly — the peer is out of step and cannot be trusted to resynchronise.
 * - The messages of one connection are handled strictly one after another, so the ACKs go out in order and each
 *   matches its message (MSA-2 = MSH-10) whatever the handler latencies; other connections are not blocked.
 * - The injected handler stores the message durably before it resolves, so an ACK never precedes the write.
 *   A handler that throws yields an AR (the sender keeps the message and retries); the connection stays up.
 * - A peer that closes with messages pending: the message being handled still completes (it is stored); frames
 *   that never completed are discarded and logged (they were never acknowledged, so the sender still owns them).
 * - `close()`: stop accepting, stop reading, let queued messages finish and be acknowledged, then end sockets.
 * - Logs carry peer, control id, sizes and timings — never message content above debug.
 * - Optional TLS (MLLP over TLS, as IHE ATNA secure node): a certificate and key, and with a CA bundle mutual TLS
 *   (the sender must present a certificate that CA signed). Optional address allow-list: a connection from an
 *   address no sender rule names is closed before anything is read (senders.ts).
 *
 * @see HL7 v2.5.1 Appendix C.4 (MLLP release 2), ch. 2 §2.9 (acknowledgment rules)
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../log.js';
import { OutcomeError } from '../fhir/outcome.js';
import { buildAck, readMsh } from '../hl7v2/ack.js';
import { declaredCharset, encode, rawMsh } from '../hl7v2/decode.js';
import { Deframer, frame } from './framing.js';

export { Deframer, frame, VT, FS, CR } from './framing.js';

/** Where a message came from. */
export interface Peer {
  remoteAddress: string;
  remotePort: number;
  localPort: number;
}

/**
 * Stores (durably) and processes one message; resolves with the ACK bytes to send, or null to send none (e.g.
 * MSH-16 = NE). A rejection makes the server answer AR.
 */
export type MllpHandler = (payload: Buffer, peer: Peer) => Promise<Buffer | null>;

export interface MllpOptions {
  /** 0 → an ephemeral port (see `MllpServer.port`) */
  port: number;
  host: string;
  /** largest payload accepted, bytes */
  maxMessageBytes: number;
  handler: MllpHandler;
  logger: Logger;
  /** MLLP over TLS; with `ca`, client certificates signed by it are required */
  tls?: { cert: Buffer; key: Buffer; ca?: Buffer };
  /** a connection from an address this refuses is closed at once */
  allowAddress?: (address: string) => boolean;
  /** a connection that sends nothing (and has no message in hand) for this long is closed, ms; 0 = never */
  idleTimeoutMs?: number;
  /** open connections one address may hold; more are closed at once; 0 = no cap */
  maxConnectionsPerAddress?: number;
}

export interface MllpServer {
  /** the port actually bound */
  port: number;
  /** stop accepting, let queued messages finish and be acknowledged, then close every connection */
  close(): Promise<void>;
}

/** An AR for a raw payload (or the start of one), in the charset its MSH-18 names. */
function rejectAck(raw: Buffer, error: OutcomeError): Buffer {
  const text = buildAck(rawMsh(raw), { code: 'AR', errors: [error] });
  return encode(text, declaredCharset(raw) || 'utf-8');
}

/** MSH-10 of a raw payload, for logs ('' when none). */
function controlIdOf(raw: Buffer): string {
  return readMsh(rawMsh(raw))?.controlId ?? '';
}

interface Connection {
  socket: net.Socket;
  /** the tail of this connection's sequential message queue */
  queue: Promise<void>;
}

/** Starts an MLLP listener; resolves once it is bound. */
export async function startMllpServer(opts: MllpOptions): Promise<MllpServer> {
  const connections = new Set<Connection>();
  const perAddress = new Map<string, number>();
  let closing = false;

  const onSocket = (socket: net.Socket): void => {
    if (socket.destroyed) return; // refused by the address check
    socket.setNoDelay(true); // an ACK is one small write: do not let Nagle hold it back
    const peer: Peer = { remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0, localPort: socket.localPort ?? 0 };
    const log = opts.logger.child({ peer: `${peer.remoteAddress}:${peer.remotePort}` });
    const deframer = new Deframer(opts.maxMessageBytes);
    const conn: Connection = { socket, queue: Promise.resolve() };
    connections.add(conn);
    let received = 0;
    let inHand = 0;
    log.info('mllp connection opened');
    if (opts.idleTimeoutMs) {
      // an interface engine keeps its connection open between messages; one that says nothing for this long (and is
      // not waiting for an ACK) is closed, so idle or half-open sockets cannot pile up
      socket.setTimeout(opts.idleTimeoutMs, () => {
        if (inHand > 0) return;
        log.info('mllp connection idle; closed', { idleMs: opts.idleTimeoutMs });
        socket.end();
        setTimeout(() => socket.destroy(), 5000).unref();
      });
    }
    if (closing) {
      socket.end();
      return;
    }

    const send = (ack: Buffer, controlId: string): void => {
      if (socket.writable) socket.write(frame(ack));
      else log.warn('mllp peer gone before its ACK could be sent', { controlId });
    };

    const handleOne = async (payload: Buffer): Promise<void> => {
      const started = performance.now();
      const controlId = controlIdOf(payload);
      let ack: Buffer | null;
      try {
        ack = await opts.handler(payload, peer);
      } catch (err) {
        // the handler's own failure (e.g. the store is down): refuse, so the sender keeps the message and retries
        const e = err instanceof OutcomeError ? err : new OutcomeError('busy', 'the message could not be stored; send it again later');
        log.error('mllp handler failed; answered AR', { controlId, category: e.category, error: err instanceof Error ? err.name : typeof err });
        log.debug('mllp handler failure detail', { controlId, error: err instanceof Error ? err.message : String(err) });
        ack = rejectAck(payload, e);
      }
      if (ack) send(ack, controlId);
      log.debug('mllp message handled', { controlId, bytes: payload.length, acked: ack !== null, ms: +(performance.now() - started).toFixed(1) });
    };

    const enqueue = (job: () => Promise<void>): void => {
      // handleOne never rejects, but a bug must not break the chain for the next message
      conn.queue = conn.queue.then(job).catch((err: unknown) => log.error('mllp internal error', { error: String(err) }));
    };

    socket.on('data', (chunk: Buffer) => {
      if (closing) return; // shutting down: frames not yet complete stay with the sender (never acknowledged)
      const payloads = deframer.push(chunk);
      if (deframer.skipped) {
        log.debug('mllp bytes outside a frame skipped', { bytes: deframer.skipped });
        deframer.skipped = 0;
      }
      for (const p of payloads) {
        received++;
        inHand++;
        enqueue(() => handleOne(p).finally(() => inHand--));
      }
      if (deframer.overflow) {
        const overflow = deframer.overflow;
        socket.removeAllListeners('data');
        socket.resume(); // whatever else the peer sends is drained and dropped
        const head = deframer.head;
        log.warn('mllp message over the size limit; answering AR and closing the connection', {
          limit: opts.maxMessageBytes,
          controlId: controlIdOf(head),
        });
        // the messages queued before it are answered first; then the AR, then a clean close
        enqueue(
          () =>
            new Promise<void>((resolve) => {
              if (!socket.writable) return resolve();
              socket.end(frame(rejectAck(head, overflow)), () => resolve());
              setTimeout(() => socket.destroy(), 5000).unref(); // a peer that never closes its side
            }),
        );
      }
    });
    socket.on('close', () => {
      connections.delete(conn);
      if (deframer.pending && !deframer.overflow) {
        log.warn('mllp connection closed with an unfinished frame; discarded (never acknowledged)', { bytes: deframer.pending });
      }
      log.info('mllp connection closed', { messages: received });
    });
    socket.on('error', (err) => log.debug('mllp socket error', { error: err.message }));
  };
  const server: net.Server = opts.tls
    ? tls.createServer({ cert: opts.tls.cert, key: opts.tls.key, ...(opts.tls.ca ? { ca: opts.tls.ca, requestCert: true, rejectUnauthorized: true } : {}) }, onSocket)
    : net.createServer(onSocket);
  // the address check comes first, on the raw TCP connection (before a TLS handshake)
  server.prependListener('connection', (socket: net.Socket) => {
    const address = socket.remoteAddress ?? '';
    if (opts.allowAddress && !opts.allowAddress(address)) {
      opts.logger.warn('mllp connection from an address no sender rule allows; closed', { peer: address });
      socket.destroy();
      return;
    }
    const open = perAddress.get(address) ?? 0;
    if (opts.maxConnectionsPerAddress && open >= opts.maxConnectionsPerAddress) {
      opts.logger.warn('mllp connection over the per-address cap; closed', { peer: address, cap: opts.maxConnectionsPerAddress });
      socket.destroy();
      return;
    }
    perAddress.set(address, open + 1);
    socket.once('close', () => {
      const n = (perAddress.get(address) ?? 1) - 1;
      if (n > 0) perAddress.set(address, n);
      else perAddress.delete(address);
    });
  });
  if (opts.tls) {
    server.on('tlsClientError', (err, socket) => opts.logger.warn('mllp TLS handshake failed', { peer: socket.remoteAddress ?? '', error: err.message }));
  }
  server.on('error', (err) => opts.logger.error('mllp listener error', { error: err.message }));

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  opts.logger.info('mllp listening', { host: opts.host, port, tls: !!opts.tls, mutualTls: !!opts.tls?.ca });

  return {
    port,
    async close() {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      // from now on reads are dropped (see 'data'): what is already queued is finished and acknowledged
      await Promise.allSettled([...connections].map((c) => c.queue));
      for (const c of connections) c.socket.end();
      const force = setTimeout(() => connections.forEach((c) => c.socket.destroy()), 2000);
      force.unref();
      await stopped;
      clearTimeout(force);
      opts.logger.info('mllp listener closed', { port });
    },
  };
}
