/** Tiny timing helpers: run a function for a while after a warm-up and report operations per second. */
import pg from 'pg';

export function opsPerSecond(fn: () => void, ms = 2000): { ops: number; usPerOp: number } {
  const warm = performance.now();
  while (performance.now() - warm < 300) fn();
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < ms) {
    fn();
    n++;
  }
  const elapsed = performance.now() - start;
  return { ops: Math.round((n / elapsed) * 1000), usPerOp: +((elapsed * 1000) / n).toFixed(1) };
}

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export function line(label: string, v: Record<string, unknown>): void {
  console.log(`${label.padEnd(44)} ${Object.entries(v).map(([k, x]) => `${k}=${x}`).join('  ')}`);
}

/** Removes a benchmark's PostgreSQL schema (and everything in it). */
export async function dropSchema(databaseUrl: string, schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
}
