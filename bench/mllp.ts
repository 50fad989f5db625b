/**
 * BENCH_MESSAGES (800), BENCH_RATE (200 msg/s), BENCH_SECONDS (10) and BENCH_CONNECTIONS (8) set the sizes.
 *
 * (b) End-to-end MLLP ingest with durable commit, for each HL7_ACK_AFTER: `commit`, every ACK (AA) sent only after
 * the raw message is stored and its resources are committed to the shared plan; `conversion`, every AA after the
 * raw message is stored and converted and its resources checked, the commit following in the background — there the
 * sustained rate counts until the last message's resources are committed, and the latency line says how many were
 * still to commit at the last ACK and how long they took. Sustained messages/s with 8 connections sending back to
 * back, then ACK latency p50/p99 at a fixed 200 msg/s (latency counted from the scheduled send time, so a slow
 * ACK cannot hide the messages queued behind it).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { startGateway } from '../src/app.js';
import { silentLogger } from '../src/log.js';
import { connectMllp } from '../src/mllp/client.js';
import { adtA03 } from './fixtures.js';
import { line, percentile, dropSchema } from './timing.js';

export async function benchMllp(opts: { label: string; databaseUrl?: string; ackAfter?: 'commit' | 'conversion' }): Promise<void> {
  const ackAfter = opts.ackAfter ?? 'commit';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-bench-'));
  const schema = opts.databaseUrl ? `cg_bench_${crypto.randomBytes(4).toString('hex')}` : undefined;
  const config = loadConfig({ PORT: '0', MLLP_PORT: '0', HOST: '127.0.0.1', DATA_DIR: dir, HL7_ACK_AFTER: ackAfter, ...(process.env.PGLITE_SHARED_BUFFERS ? { PGLITE_SHARED_BUFFERS: process.env.PGLITE_SHARED_BUFFERS } : {}), ...(opts.databaseUrl ? { DATABASE_URL: opts.databaseUrl } : {}) });
  const gw = await startGateway(config, silentLogger, { schema, mllpEphemeral: true });
  const port = gw.mllp!.port;
  console.log(
    ackAfter === 'commit'
      ? `\n(b) MLLP end to end on ${opts.label} (HL7_ACK_AFTER=commit: every AA after the message is stored and its resources are committed)`
      : `\n(b) MLLP end to end on ${opts.label} (HL7_ACK_AFTER=conversion: every AA after the message is stored, converted and checked; resources committed in the background; rates count until the last is committed)`,
  );
  let n = 0;
  try {
    // warm-up
    const w = await connectMllp('127.0.0.1', port);
    for (let i = 0; i < 50; i++) await w.send(adtA03(n++));
    await w.close();

    // sustained: BENCH_CONNECTIONS connections back to back (messages arriving together share transactions)
    const total = Number(process.env.BENCH_MESSAGES ?? 800);
    const conns = Number(process.env.BENCH_CONNECTIONS ?? 8);
    const t0 = performance.now();
    let bad = 0;
    await Promise.all(
      Array.from({ length: conns }, async () => {
        const c = await connectMllp('127.0.0.1', port);
        for (let i = 0; i < total / conns; i++) if (!(await c.send(adtA03(n++))).toString().includes('MSA|AA')) bad++;
        await c.close();
      }),
    );
    const acked = (performance.now() - t0) / 1000;
    await gw.receiver.drain(); // ACKs after conversion: until the last message's resources are committed
    const secs = (performance.now() - t0) / 1000;
    line(`sustained, ${conns} connections`, {
      'msg/s': Math.round(total / secs),
      messages: total,
      'not AA': bad,
      ...(ackAfter === 'conversion' ? { 'acked msg/s': Math.round(total / acked) } : {}),
    });

    // fixed rate 200 msg/s for 10 s over 4 connections
    const rate = Number(process.env.BENCH_RATE ?? 200);
    const duration = Number(process.env.BENCH_SECONDS ?? 10);
    const lat: number[] = [];
    const start = performance.now() + 100;
    const perConn = 4;
    await Promise.all(
      Array.from({ length: perConn }, async (_, k) => {
        const c = await connectMllp('127.0.0.1', port);
        for (let i = k; i < rate * duration; i += perConn) {
          const due = start + (i * 1000) / rate;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          await c.send(adtA03(n++));
          lat.push(performance.now() - due);
        }
        await c.close();
      }),
    );
    const backlog = gw.receiver.backlog;
    const sent = performance.now();
    await gw.receiver.drain();
    lat.sort((a, b) => a - b);
    if (lat.length) {
      line(`ACK latency at ${rate} msg/s for ${duration} s`, {
        p50_ms: percentile(lat, 50).toFixed(1),
        p99_ms: percentile(lat, 99).toFixed(1),
        max_ms: lat[lat.length - 1].toFixed(1),
        ...(ackAfter === 'conversion' ? { 'not committed at the last ACK': backlog, 'committed after': `${((performance.now() - sent) / 1000).toFixed(1)} s` } : {}),
      });
    }
    line('gateway process', { rss_mb: Math.round(process.memoryUsage().rss / 1e6) });
  } finally {
    await gw.close();
    fs.rmSync(dir, { recursive: true, force: true });
    if (schema && opts.databaseUrl) await dropSchema(opts.databaseUrl, schema);
  }
}
