/**
 * Municipal social-care import: a generated Tartu linn export (the `;`-separated CSV of
 * mappings/social/tartu-linn.yaml) posted to POST /social-care/tartu-linn on a gateway in this process, until
 * every row is committed to the shared plans. Rows/s, and the process's peak RSS sampled every 50 ms — for a
 * small and a large file, so "memory flat in file size" is a measured statement.
 *
 *   BENCH_ROWS (100000) rows in the large file, BENCH_PEOPLE_PER_ROW (0.5) people per row (two decisions each);
 *   IMPORT_WORKERS as for the gateway (default by cores: none on two).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config.js';
import { startGateway } from '../src/app.js';
import { silentLogger } from '../src/log.js';
import { isikukoodCheckDigit } from '../src/fhir/identifiers.js';
import type { ImportReport } from '../src/social/import.js';
import { line, dropSchema } from './timing.js';

const HEADER = 'Otsuse nr;Otsuse kuupäev;Isikukood;Eesnimi;Perekonnanimi;Aadress;Teenus;Algus;Lõpp;Maht;Ühik;Periood;Juhtumitöötaja;Ametikoht;Telefon;E-post;Teenuseosutaja;Hooldaja;Seos;Hooldaja telefon;Märkus';
const SERVICES = ['Koduteenus', 'Tugiisikuteenus', 'Sotsiaaltransport', 'Päevakeskus', 'Isikliku abistaja teenus', 'Intervallhooldus', 'Sotsiaalnõustamine'];
const WORKERS = ['Mari Tamm', 'Kätlin Žukova', 'Jaan Õunapuu', 'Liina Šmidt', 'Peeter Mägi', 'Ülle Kõiv'];

/** A valid isikukood for person number n (born 1930–1999, serial from n). */
export function isikukood(n: number): string {
  const year = 30 + (n % 70);
  const month = 1 + (Math.floor(n / 70) % 12);
  const day = 1 + (Math.floor(n / 840) % 28);
  const serial = Math.floor(n / 23520) % 1000;
  const first = n % 2 === 0 ? '4' : '3';
  const ten = `${first}${String(year).padStart(2, '0')}${String(month).padStart(2, '0')}${String(day).padStart(2, '0')}${String(serial).padStart(3, '0')}`;
  return ten + isikukoodCheckDigit(ten);
}

export function tartuExport(rows: number, peoplePerRow = 0.5, offset = 0): Buffer {
  const people = Math.max(1, Math.round(rows * peoplePerRow));
  const lines = [HEADER];
  for (let i = 0; i < rows; i++) {
    const p = (i % people) + offset;
    const w = WORKERS[p % WORKERS.length];
    lines.push(
      [
        `B-${offset}-${i}`,
        '02.11.2026',
        isikukood(p),
        'Eesnimi',
        `Perenimi${p}`,
        `Riia tn ${p % 200}, Tartu`,
        SERVICES[i % SERVICES.length],
        '01.12.2026',
        i % 3 === 0 ? '31.05.2027' : '',
        `${1 + (i % 8)},5`,
        'tundi',
        'nädalas',
        w,
        'sotsiaaltöötaja',
        '+372 736 1234',
        `${w.split(' ')[0].toLowerCase()}@tartu.ee`,
        'Tartu Koduhoolduse SA',
        i % 4 === 0 ? `Hooldaja ${p}` : '',
        i % 4 === 0 ? 'tütar' : '',
        '',
        i % 5 === 0 ? '"Märkus; semikooloniga"' : '',
      ].join(';'),
    );
  }
  return Buffer.from(lines.join('\r\n') + '\r\n', 'utf8');
}

function post(url: string, body: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'Content-Type': 'text/csv', 'Content-Length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

export async function benchSocial(opts: { label: string; databaseUrl?: string }): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-bench-social-'));
  const schema = opts.databaseUrl ? `cg_bench_${crypto.randomBytes(4).toString('hex')}` : undefined;
  const config = loadConfig({
    PORT: '0',
    MLLP_PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dir,
    ...(opts.databaseUrl ? { DATABASE_URL: opts.databaseUrl } : {}),
    ...(process.env.IMPORT_WORKERS ? { IMPORT_WORKERS: process.env.IMPORT_WORKERS } : {}),
  });
  const gw = await startGateway(config, silentLogger, { schema });
  const url = `http://127.0.0.1:${gw.http.port}/social-care/tartu-linn`;
  const workers = opts.databaseUrl && config.importWorkers > 0 ? `, ${config.importWorkers} import workers` : '';
  console.log(`\nsocial-care import on ${opts.label}${workers} (POST /social-care/tartu-linn, committed to the shared plans)`);
  const large = Number(process.env.BENCH_ROWS ?? 100_000);
  const perRow = Number(process.env.BENCH_PEOPLE_PER_ROW ?? 0.5);
  try {
    let offset = 0;
    for (const rows of [Math.max(1000, Math.round(large / 10)), large]) {
      const body = tartuExport(rows, perRow, offset);
      offset += rows; // new people each run: every row writes
      global.gc?.();
      let peak = process.memoryUsage().rss;
      const before = peak;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
      const t0 = performance.now();
      // node:http rather than fetch: a large import answers after minutes, past fetch's header timeout
      const res = await post(url, body);
      const report = JSON.parse(res.body) as ImportReport;
      const secs = (performance.now() - t0) / 1000;
      clearInterval(sampler);
      line(`${rows} rows (${(body.length / 1e6).toFixed(1)} MB)`, {
        status: res.status,
        'rows/s': Math.round(report.rows.accepted / secs),
        accepted: report.rows.accepted,
        rejected: report.rows.rejected,
        seconds: secs.toFixed(1),
        rss_before_mb: Math.round(before / 1e6),
        rss_peak_mb: Math.round(peak / 1e6),
      });
    }
  } finally {
    await gw.close();
    fs.rmSync(dir, { recursive: true, force: true });
    if (schema && opts.databaseUrl) await dropSchema(opts.databaseUrl, schema);
  }
}
