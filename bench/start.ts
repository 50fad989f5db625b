/**
 * Serving after `npm start` on an existing embedded store (target: 2 s). A first start makes the store (not
 * counted); then `npm start` runs BENCH_STARTS times (5) on it, one after another, each polled every 10 ms: the time
 * from spawning `npm start` to the first answer of /healthz and of a FHIR search, min / median / max.
 * Needs the build (`npm run bench` builds first). BENCH_START_COMMAND=node runs `node dist/src/main.js` instead.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { line, percentile } from './timing.js';

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });

async function startOnce(dataDir: string): Promise<{ healthz: number; search: number }> {
  const port = await freePort();
  const env = { ...process.env, DATA_DIR: dataDir, PORT: String(port), MLLP_PORT: '0', LOG_LEVEL: 'warn' };
  const t0 = performance.now();
  const child =
    process.env.BENCH_START_COMMAND === 'node'
      ? spawn(process.execPath, ['--max-semi-space-size=64', '--wasm-tiering-budget=20000000', 'dist/src/main.js'], { env, detached: true, stdio: 'ignore' })
      : spawn('npm', ['start', '--silent'], { env, detached: true, stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  try {
    for (;;) {
      if (performance.now() - t0 > 120_000) throw new Error('the gateway did not answer /healthz within 120 s');
      const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const healthz = performance.now() - t0;
    const res = await fetch(`http://127.0.0.1:${port}/fhir/Patient?_count=1`);
    if (!res.ok) throw new Error(`search answered ${res.status}`);
    await res.text();
    return { healthz, search: performance.now() - t0 };
  } finally {
    process.kill(-child.pid!, 'SIGTERM');
    await exited;
  }
}

export async function benchStart(): Promise<void> {
  const runs = Number(process.env.BENCH_STARTS ?? 5);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-bench-start-'));
  try {
    console.log(`\n(c) serving after ${process.env.BENCH_START_COMMAND === 'node' ? 'node dist/src/main.js' : 'npm start'} on an existing embedded store (${runs} starts)`);
    await startOnce(dataDir); // makes the store: not counted
    const h: number[] = [];
    const s: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await startOnce(dataDir);
      h.push(r.healthz);
      s.push(r.search);
    }
    const fmt = (xs: number[]) => {
      const sorted = [...xs].sort((a, b) => a - b);
      return `${(sorted[0] / 1000).toFixed(2)} / ${(percentile(sorted, 50) / 1000).toFixed(2)} / ${(sorted[sorted.length - 1] / 1000).toFixed(2)}`;
    };
    line('/healthz answers, s (min / median / max)', { s: fmt(h) });
    line('a FHIR search answers, s (min / median / max)', { s: fmt(s) });
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}
