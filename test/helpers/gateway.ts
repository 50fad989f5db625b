/** Starts gateways for tests: in process (port 0) or as a child process of the built dist/ (for kill -9 tests). */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { startGateway, type Gateway } from '../../src/app.js';
import { silentLogger } from '../../src/log.js';
import type { Backend } from './backends.js';

export async function startTestGateway(
  backend: Backend,
  extra: Record<string, string> = {},
): Promise<{ gw: Gateway; base: string; url: string; mllpPort: number }> {
  const env = { ...backend.env(), PORT: '0', MLLP_PORT: '0', HOST: '127.0.0.1', ...extra };
  const config = loadConfig(env);
  const gw = await startGateway(config, silentLogger, { mllpEphemeral: true });
  return { gw, base: gw.http.baseUrl, url: `http://127.0.0.1:${gw.http.port}`, mllpPort: gw.mllp!.port };
}

export interface ChildGateway {
  proc: ChildProcess;
  url: string;
  mllpPort: number;
  logs: string[];
}

/** Runs `node dist/src/main.js` and resolves once it logs that it listens. */
export function spawnGateway(env: Record<string, string>): Promise<ChildGateway> {
  const main = path.resolve(process.cwd(), 'dist/src/main.js');
  const proc = spawn(process.execPath, [main], {
    env: { ...process.env, PORT: '0', MLLP_PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`gateway did not start:\n${logs.join('\n')}`)), 60_000);
    proc.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        logs.push(line);
        try {
          const rec = JSON.parse(line) as { msg?: string; http?: number; mllp?: number };
          if (rec.msg === 'care-gateway listening') {
            clearTimeout(timer);
            resolve({ proc, url: `http://127.0.0.1:${rec.http}`, mllpPort: rec.mllp ?? 0, logs });
          }
        } catch {
          // not a log line
        }
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited with ${code}:\n${logs.join('\n')}`));
    });
  });
}

export function killed(proc: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  return new Promise((resolve) => {
    proc.removeAllListeners('exit');
    proc.on('exit', (code) => resolve(code));
    proc.kill(signal);
  });
}

/**
 * One gateway per suite on a fresh store of the backend: started before the suite's tests, closed (and its
 * data removed) after them. Read the fields inside tests or a later beforeAll.
 */
export function useGateway(
  makeBackend: () => Backend,
  extra: Record<string, string> | (() => Record<string, string>) = {},
): { gw: Gateway; base: string; url: string; mllpPort: number; backend: Backend } {
  const ctx = {} as { gw: Gateway; base: string; url: string; mllpPort: number; backend: Backend };
  beforeAll(async () => {
    ctx.backend = makeBackend();
    await ctx.backend.prepare(); // the empty store the gateway then opens
    Object.assign(ctx, await startTestGateway(ctx.backend, typeof extra === 'function' ? extra() : extra));
  });
  afterAll(async () => {
    await ctx.gw?.close();
    await ctx.backend?.cleanup();
  });
  return ctx;
}
