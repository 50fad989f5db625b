/**
 * The FHIR API under a county's load (issue: GP pull and municipality query at a million resources).
 *
 * 1. Seeds a county through the repository's batched writes (the same validation, versions and search index
 *    rows as any write): BENCH_PEOPLE people (100,000) × 10 resources — Patient, Encounter, 2 Conditions,
 *    2 ServiceRequests, the shared CarePlan and CareTeam (GP practice, hospital and municipality of residence as
 *    participants) and 2 Provenance — plus the GP practices, hospitals and the 8 Tartu county municipalities.
 * 2. Starts the gateway as a child process on that store and drives it with 16 concurrent keep-alive clients:
 *    (a) GP pull `CarePlan?patient.identifier=…|…&_include=CarePlan:care-team&_revinclude=Provenance:target`
 *        for random people, for BENCH_SECONDS (20);
 *    (b) municipality `CareTeam?participant=Organization/ehak-…&status=active&_count=50`, each client paging
 *        to the end by `next` links (BENCH_PAGES_PER_CLIENT pages at most, 200).
 *    Requests/s, latency p50/p99, and the gateway's peak RSS (VmHWM).
 *
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npm run bench -- api     (PostgreSQL, own schema)
 *   BENCH_PEOPLE=20000 npm run bench -- api-pglite                                          (embedded store)
 *   BENCH_REUSE_SCHEMA=cg_… reruns on an earlier seed (PostgreSQL); BENCH_NODE_ARGS passes node flags to the
 *   gateway (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`, `--max-semi-space-size=4`).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { spawn } from 'node:child_process';
import type { Resource } from '@medplum/fhirtypes';
import { openStore } from '../src/store/index.js';
import { writeChecks } from '../src/write-checks.js';
import { municipalities, municipalityOrganization, EHAK_EXTENSIONS } from '../src/county/directory.js';
import { isikukood } from './social.js';
import { line, percentile, dropSchema } from './timing.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const LA = { coding: [{ system: 'http://loinc.org', code: 'LA28865-6' }] };
const SCT = 'http://snomed.info/sct';
const role = (code: string, display: string, system = SCT) => [{ coding: [{ system, code, display }] }];

function person(n: number, ehaks: string[]): Resource[] {
  const pid = `p-${n}`;
  const subject = { reference: `Patient/${pid}` };
  const ehak = ehaks[n % ehaks.length];
  const gp = `Organization/gp-${n % 50}`;
  const hospital = `Organization/hosp-${n % 2}`;
  const muni = `Organization/ehak-${ehak}`;
  return [
    {
      resourceType: 'Patient',
      id: pid,
      identifier: [{ system: NI, value: isikukood(n) }],
      name: [{ family: `Perenimi${n}`, given: ['Eesnimi'] }],
      gender: n % 2 ? 'male' : 'female',
      address: [{ use: 'home', country: 'EE', extension: [{ url: EHAK_EXTENSIONS[0], valueCoding: { system: 'https://fhir.ee/sid/ehak', code: ehak } }] }],
      generalPractitioner: [{ reference: gp }],
    },
    { resourceType: 'Encounter', id: `e-${n}`, status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' }, subject, serviceProvider: { reference: hospital }, period: { start: '2026-10-01', end: '2026-10-09' } },
    { resourceType: 'Condition', id: `c-${n}-1`, subject, code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I63.9' }] } },
    { resourceType: 'Condition', id: `c-${n}-2`, subject, code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I10' }] } },
    { resourceType: 'ServiceRequest', id: `sr-${n}-1`, status: 'active', intent: 'order', subject, code: { text: 'GP follow-up after discharge' }, performer: [{ reference: gp }] },
    { resourceType: 'ServiceRequest', id: `sr-${n}-2`, status: 'active', intent: 'order', subject, code: { text: 'Home care' }, requester: { reference: muni } },
    {
      resourceType: 'CareTeam',
      id: `ct-${n}`,
      meta: { profile: ['https://care-gateway.ee/fhir/StructureDefinition/shared-careteam'] },
      status: 'active',
      category: [LA],
      subject,
      participant: [
        { role: role('116154003', 'Patient'), member: subject },
        { role: role('446050000', 'Primary care physician'), member: { reference: gp } },
        { role: role('309343006', 'Physician'), member: { reference: hospital } },
        { role: role('municipality-of-residence', 'Municipality of residence', 'https://care-gateway.ee/fhir/CodeSystem/care-team-role'), member: { reference: muni } },
      ],
    },
    {
      resourceType: 'CarePlan',
      id: `cp-${n}`,
      meta: { profile: ['https://care-gateway.ee/fhir/StructureDefinition/shared-careplan'] },
      status: 'active',
      intent: 'plan',
      category: [LA],
      subject,
      careTeam: [{ reference: `CareTeam/ct-${n}` }],
      addresses: [{ reference: `Condition/c-${n}-1` }, { reference: `Condition/c-${n}-2` }],
      activity: [{ reference: { reference: `ServiceRequest/sr-${n}-1` } }, { reference: { reference: `ServiceRequest/sr-${n}-2` } }],
    },
    { resourceType: 'Provenance', id: `pv-${n}-1`, target: [{ reference: `CarePlan/cp-${n}/_history/1` }, { reference: `Encounter/e-${n}/_history/1` }], recorded: '2026-10-09T12:00:00Z', agent: [{ who: { reference: hospital } }] },
    { resourceType: 'Provenance', id: `pv-${n}-2`, target: [{ reference: `CarePlan/cp-${n}/_history/1` }, { reference: `ServiceRequest/sr-${n}-2/_history/1` }], recorded: '2026-10-12T12:00:00Z', agent: [{ who: { reference: muni } }] },
  ];
}

export async function seed(opts: { databaseUrl?: string; schema?: string; dataDir?: string }, people: number): Promise<{ resources: number; seconds: number }> {
  const store = await openStore({ databaseUrl: opts.databaseUrl, schema: opts.schema, dataDir: opts.dataDir, ...writeChecks });
  const t0 = performance.now();
  const ehaks = [...municipalities().keys()];
  const shared: Resource[] = [
    ...ehaks.map((e) => municipalityOrganization(municipalities().get(e)!)),
    ...Array.from({ length: 50 }, (_, i): Resource => ({ resourceType: 'Organization', id: `gp-${i}`, name: `Perearstikeskus ${i}` })),
    { resourceType: 'Organization', id: 'hosp-0', name: 'Haigla 0' },
    { resourceType: 'Organization', id: 'hosp-1', name: 'Haigla 1' },
  ];
  await store.repo.transaction((w) => w.updateMany(shared));
  let n = 0;
  const per = 200; // people per transaction
  while (n < people) {
    const batch: Resource[] = [];
    for (let i = 0; i < per && n < people; i++, n++) batch.push(...person(n, ehaks));
    await store.repo.transaction((w) => w.updateMany(batch));
    if (n % 10_000 === 0) process.stdout.write(`  seeded ${n} people (${Math.round((n * 10) / ((performance.now() - t0) / 1000))} resources/s)\n`);
  }
  // a bulk load leaves the planner without statistics until autovacuum gets to it: gather them now
  await store.db.query('ANALYZE');
  await store.close();
  return { resources: shared.length + people * 10, seconds: (performance.now() - t0) / 1000 };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent, headers: { Accept: 'application/fhir+json' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      })
      .on('error', reject);
  });
}

function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

export async function benchApi(opts: { label: string; databaseUrl?: string }): Promise<void> {
  const people = Number(process.env.BENCH_PEOPLE ?? 100_000);
  const seconds = Number(process.env.BENCH_SECONDS ?? 20);
  const clients = 16;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-bench-api-'));
  // BENCH_REUSE_SCHEMA: run the workload again on a county seeded before (PostgreSQL), without seeding or dropping it
  const reuse = opts.databaseUrl ? process.env.BENCH_REUSE_SCHEMA : undefined;
  const schema = opts.databaseUrl ? (reuse ?? `cg_bench_api_${crypto.randomBytes(3).toString('hex')}`) : undefined;
  if (!reuse) {
    console.log(`\nFHIR API on ${opts.label}: ${people} people, seeding…`);
    const seeded = await seed({ databaseUrl: opts.databaseUrl, schema, dataDir: opts.databaseUrl ? undefined : dir }, people);
    line('seed', { resources: seeded.resources, seconds: seeded.seconds.toFixed(0), 'resources/s': Math.round(seeded.resources / seeded.seconds) });
  } else console.log(`\nFHIR API on ${opts.label}: the county seeded in schema ${reuse} (${people} people)`);
  let env: Record<string, string> = { DATA_DIR: dir };
  if (opts.databaseUrl && schema) {
    const u = new URL(opts.databaseUrl);
    u.searchParams.set('options', `-c search_path=${schema}`);
    env = { DATABASE_URL: u.toString() };
  }
  // BENCH_NODE_ARGS: extra node flags for the gateway, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile it
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, path.resolve('dist/src/main.js')], { env: { ...process.env, ...env, PORT: '0', MLLP_PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        const m = /"http":(\d+)/.exec(buf);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (c) => reject(new Error(`gateway exited ${c}`)));
    });
    const base = `http://127.0.0.1:${port}/fhir`;
    // (a) GP pull
    const gpUrl = (n: number) => `${base}/CarePlan?patient.identifier=${encodeURIComponent(`${NI}|${isikukood(n)}`)}&_include=CarePlan:care-team&_revinclude=Provenance:target`;
    const check = JSON.parse((await get(gpUrl(7))).body) as { entry?: unknown[] };
    if ((check.entry?.length ?? 0) < 4) throw new Error(`GP pull returned ${check.entry?.length} entries, expected plan + team + 2 Provenance`);
    for (let i = 0; i < 200; i++) await get(gpUrl(i)); // warm-up
    const lat: number[] = [];
    let bad = 0;
    const end = performance.now() + seconds * 1000;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (performance.now() < end) {
          const t = performance.now();
          const r = await get(gpUrl(Math.floor(Math.random() * people)));
          lat.push(performance.now() - t);
          if (r.status !== 200) bad++;
        }
      }),
    );
    lat.sort((a, b) => a - b);
    line(`(a) GP pull, ${clients} clients, ${seconds} s`, { 'req/s': Math.round(lat.length / seconds), p50_ms: percentile(lat, 50).toFixed(1), p99_ms: percentile(lat, 99).toFixed(1), errors: bad });
    // (b) municipality pages
    const maxPages = Number(process.env.BENCH_PAGES_PER_CLIENT ?? 200);
    const ehaks = [...municipalities().keys()];
    const pageLat: number[] = [];
    let teams = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async (_, c) => {
        let next: string | undefined = `${base}/CareTeam?participant=Organization/ehak-${ehaks[c % ehaks.length]}&status=active&_count=50`;
        for (let p = 0; next && p < maxPages; p++) {
          const t = performance.now();
          const r = await get(next);
          pageLat.push(performance.now() - t);
          // a load generator's share of these 2 cores is taken from the gateway: the first page of each client is
          // parsed and checked in full, the rest only scanned for their matches and the next link
          if (r.status !== 200) throw new Error(`municipality page: HTTP ${r.status}`);
          if (p === 0) {
            const b = JSON.parse(r.body) as { entry?: { resource?: { resourceType?: string } }[]; link?: { relation: string; url: string }[] };
            if (b.entry?.some((e) => e.resource?.resourceType !== 'CareTeam')) throw new Error('municipality page: an entry that is not a CareTeam');
          }
          teams += r.body.match(/"search":\{"mode":"match"\}/g)?.length ?? 0;
          next = /"relation":"next","url":"([^"]+)"/.exec(r.body)?.[1];
        }
      }),
    );
    pageLat.sort((a, b) => a - b);
    const secs = (performance.now() - t0) / 1000;
    line(`(b) municipality pages of 50, ${clients} clients`, { pages: pageLat.length, teams, 'pages/s': Math.round(pageLat.length / secs), p50_ms: percentile(pageLat, 50).toFixed(1), p99_ms: percentile(pageLat, 99).toFixed(1) });
    line('gateway process', { peak_rss_mb: peakRss(child.pid!) });
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
    if (schema && opts.databaseUrl && !reuse) await dropSchema(opts.databaseUrl, schema);
  }
}
