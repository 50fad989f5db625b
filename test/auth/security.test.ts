/**
 * Who may see what, over HTTP on every backend, with real signed tokens (RS256 keys made here, a JWKS file):
 * a role matrix (hospital, GP, municipality A, municipality B, county coordinator, no token) over read, search,
 * _include/_revinclude, chained search, history, $everything and writes; attacks (forged signature, alg none,
 * expired, wrong audience, scope escalation, another municipality's person by id / chain / _revinclude,
 * SQL- and FHIRPath-looking parameters, oversized bodies), each refused and audited; the patient's audit query;
 * tampering with a stored AuditEvent detected; and the refusal to start on a public address without auth.
 *
 * @slow starts gateway processes (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AuditEvent, Bundle, CarePlan, Patient, Resource } from '@medplum/fhirtypes';
import type { Gateway } from '../../src/app.js';
import { backends, tempDir, type Backend } from '../helpers/backends.js';
import { spawnGateway, startTestGateway } from '../helpers/gateway.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';
import { isikukoodCheckDigit } from '../../src/fhir/identifiers.js';
import { registryCode } from '../helpers/auth.js';
import { testKeyPair } from '../helpers/keys.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const ISSUER = 'https://auth.tartumaa.test';
const HOSPITAL = '90006399'; // Elva hospital (mappings/facilities.yaml)
const GP = '10856624'; // Elva family practice
const TARTU = '75006546'; // Tartu linn (mappings/social/tartu-linn.yaml)
const ELVA = '77000170'; // Elva vald (mappings/directory), also given in the test mapping
const COUNTY = registryCode('7000000');

const ik = (ten: string) => ten + isikukoodCheckDigit(ten);
const A = ik('3730210271'); // lives in Elva vald
const B = ik('4450123100'); // lives in Tartu linn

const { privateKey, publicKey } = testKeyPair('issuer');
const other = testKeyPair('other');
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

function sign(claims: Record<string, unknown>, opts: { key?: crypto.KeyObject; alg?: string; kid?: string } = {}): string {
  const header = { alg: opts.alg ?? 'RS256', typ: 'JWT', kid: opts.kid ?? 'k1' };
  const data = `${b64(header)}.${b64(claims)}`;
  if (header.alg === 'none') return `${data}.`;
  return `${data}.${crypto.sign('sha256', Buffer.from(data), opts.key ?? privateKey).toString('base64url')}`;
}

describe.each(backends())('security on %s', (_name, makeBackend) => {
  let backend: Backend;
  let gw: Gateway;
  let base: string;
  let url: string;
  const dir = tempDir('cg-auth-');
  const tokens: Record<string, string> = {};
  const claims = (organization: string, kind: string, scope = 'system/*.cruds', extra: Record<string, unknown> = {}) => ({
    iss: ISSUER,
    aud: base,
    sub: `client-${kind}-${organization}`,
    iat: Math.floor(Date.now() / 1000),
    exp: Math.floor(Date.now() / 1000) + 300,
    scope,
    organization,
    organization_kind: kind,
    ...extra,
  });

  beforeAll(async () => {
    fs.writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' }] }));
    fs.mkdirSync(path.join(dir, 'maps'));
    // Elva's registry code comes with its (test) export mapping, as onboarding a municipality does
    fs.writeFileSync(
      path.join(dir, 'maps', 'elva-test.yaml'),
      `municipality: { ehak: "0171", registryCode: "${ELVA}" }\nfields: { decisionId: a, isikukood: b, service: c, start: d, note: e }\nmaps: { services: { x: home-care, y: child-case-management } }\n`,
    );
    backend = makeBackend();
    await backend.prepare();
    ({ gw, base, url } = await startTestGateway(backend, { AUTH_JWKS: path.join(dir, 'jwks.json'), AUTH_ISSUERS: ISSUER, SOCIAL_MAPPINGS_DIR: path.join(dir, 'maps'), RATE_LIMIT: '0' }));
    tokens.hospital = sign(claims(HOSPITAL, 'hospital'));
    tokens.gp = sign(claims(GP, 'gp'));
    tokens.muniA = sign(claims(TARTU, 'municipality'));
    tokens.muniB = sign(claims(ELVA, 'municipality'));
    tokens.coordinator = sign(claims(COUNTY, 'coordinator', 'system/*.cruds', { user: 'Maakonna koordinaator' }));
    // the hospital discharges A (Elva) and B (Tartu linn) over HL7 v2 with its token
    for (const [who, ehak, ctl] of [[A, '0171', 'S-1'], [B, '0793', 'S-2']]) {
      const res = await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain', Authorization: `Bearer ${tokens.hospital}` }, body: eeDischarge({ controlId: ctl, isikukood: who, ehak, visit: `V-${ctl}` }) });
      expect(await res.text()).toContain('MSA|AA');
    }
  });
  afterAll(async () => {
    await gw.close();
    await backend.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const call = (p: string, who?: string, init: RequestInit = {}) =>
    fetch(`${base}${p}`, { ...init, headers: { 'Content-Type': 'application/fhir+json', ...(who ? { Authorization: `Bearer ${who}` } : {}), ...(init.headers ?? {}) } });
  const bundle = async (p: string, who: string): Promise<Bundle> => {
    const res = await call(p, who);
    expect(res.status).toBe(200);
    return (await res.json()) as Bundle;
  };
  const patientIdOf = async (isikukood: string) => ((await bundle(`/Patient?identifier=${NI}|${isikukood}`, tokens.coordinator)).entry![0].resource as Patient).id!;
  const audits = async (): Promise<AuditEvent[]> => {
    const out: AuditEvent[] = [];
    let next: string | undefined = `${base}/AuditEvent?_count=500`;
    while (next) {
      const b = (await (await fetch(next, { headers: { Authorization: `Bearer ${tokens.coordinator}` } })).json()) as Bundle;
      out.push(...(b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource as AuditEvent));
      next = b.link?.find((l) => l.relation === 'next')?.url;
    }
    return out;
  };

  test('role matrix: who reads whose Patient and plan', async () => {
    const a = await patientIdOf(A);
    const b = await patientIdOf(B);
    const matrix: Record<string, [number, number]> = { hospital: [200, 200], gp: [200, 200], muniA: [403, 200], muniB: [200, 403], coordinator: [200, 200] };
    for (const [role, [sa, sb]] of Object.entries(matrix)) {
      expect([role, (await call(`/Patient/${a}`, tokens[role])).status]).toEqual([role, sa]);
      expect([role, (await call(`/Patient/${b}`, tokens[role])).status]).toEqual([role, sb]);
      const plans = await bundle(`/CarePlan?_count=50`, tokens[role]);
      const subjects = (plans.entry ?? []).map((e) => (e.resource as CarePlan).subject!.reference).sort();
      expect([role, subjects]).toEqual([role, [...(sa === 200 ? [`Patient/${a}`] : []), ...(sb === 200 ? [`Patient/${b}`] : [])].sort()]);
    }
    expect((await call(`/Patient/${a}`)).status).toBe(401);
    expect((await call(`/CarePlan`)).status).toBe(401);
    expect((await call(`/metadata`)).status).toBe(200); // the CapabilityStatement stays public (SMART discovery)
  });

  test('role matrix over every interaction: read, vread, search, _include/_revinclude, chain, history, $everything, write', async () => {
    const a = await patientIdOf(A);
    const b = await patientIdOf(B);
    const planOf = async (p: string) => (await bundle(`/CarePlan?patient=Patient/${p}`, tokens.coordinator)).entry![0].resource as CarePlan;
    const plans = { [a]: await planOf(a), [b]: await planOf(b) };
    const t0 = new Date().toISOString();
    // what each role may see: [person A (Elva), person B (Tartu linn)]
    const sees: Record<string, [boolean, boolean]> = { hospital: [true, true], gp: [true, true], muniA: [false, true], muniB: [true, false], coordinator: [true, true] };
    for (const [role, [seesA, seesB]] of Object.entries(sees)) {
      for (const [p, ok, ik] of [[a, seesA, A], [b, seesB, B]] as const) {
        const plan = plans[p];
        const tag = `${role} → ${p === a ? 'A' : 'B'}`;
        const status = (path: string) => call(path, tokens[role]).then((r) => [tag, path.split('?')[0], r.status]);
        const want = ok ? 200 : 403;
        expect(await status(`/Patient/${p}`)).toEqual([tag, `/Patient/${p}`, want]);
        expect(await status(`/CarePlan/${plan.id}/_history/${plan.meta!.versionId}`)).toEqual([tag, `/CarePlan/${plan.id}/_history/${plan.meta!.versionId}`, want]);
        expect(await status(`/Patient/${p}/$everything`)).toEqual([tag, `/Patient/${p}/$everything`, want]);
        // searches answer 200 and simply hold nothing of a person the caller may not see
        const found = async (path: string) => JSON.stringify((await bundle(path, tokens[role])).entry ?? []).includes(`Patient/${p}`);
        expect([tag, 'search', await found(`/CarePlan?patient=Patient/${p}`)]).toEqual([tag, 'search', ok]);
        expect([tag, 'chain', await found(`/CarePlan?patient.identifier=${NI}|${ik}`)]).toEqual([tag, 'chain', ok]);
        expect([tag, '_include', await found(`/CarePlan?_include=CarePlan:subject&_include=CarePlan:care-team&_count=100`)]).toEqual([tag, '_include', ok]);
        expect([tag, '_revinclude', await found(`/Patient?_id=${p}&_revinclude=CareTeam:subject&_revinclude=Provenance:target`)]).toEqual([tag, '_revinclude', ok]);
        // one resource's history is refused as its read is
        expect(await status(`/CarePlan/${plan.id}/_history`)).toEqual([tag, `/CarePlan/${plan.id}/_history`, want]);
        if (ok) expect([tag, 'history', await found(`/CarePlan/${plan.id}/_history`)]).toEqual([tag, 'history', true]);
        // a write about the person: a Goal (as oneself, no other organisation named) — only into the record of a
        // person the caller has a care relationship with
        const goal = { resourceType: 'Goal', lifecycleStatus: 'proposed', description: { text: 'walks to the shop' }, subject: { reference: `Patient/${p}` } };
        const created = await call(`/Goal`, tokens[role], { method: 'POST', body: JSON.stringify(goal) });
        expect([tag, 'create', created.status]).toEqual([tag, 'create', ok ? 201 : 403]);
        const id = ok
          ? ((await created.json()) as Resource).id!
          : ((await (await call(`/Goal`, tokens.coordinator, { method: 'POST', body: JSON.stringify(goal) })).json()) as Resource).id!;
        // … but reading it back, or changing it, follows the person
        expect([tag, 'read own write', (await call(`/Goal/${id}`, tokens[role])).status]).toEqual([tag, 'read own write', want]);
        const upd = await call(`/Goal/${id}`, tokens[role], { method: 'PUT', body: JSON.stringify({ ...goal, id, lifecycleStatus: 'accepted' }) });
        expect([tag, 'update', upd.status]).toEqual([tag, 'update', ok ? 200 : 403]);
        expect([tag, 'delete', (await call(`/Goal/${id}`, tokens[role], { method: 'DELETE' })).status]).toEqual([tag, 'delete', ok ? 200 : 403]);
      }
    }
    for (const path of [`/Patient/${a}`, `/CarePlan?patient=Patient/${a}`, `/Patient/${a}/$everything`, `/CarePlan/${plans[a].id}/_history`]) {
      expect([path, (await call(path)).status]).toEqual([path, 401]);
    }
    // "who looked at my data": every request above that touched A's data is in A's audit trail, by organisation —
    // 13 for a role that sees A, plus the unfiltered _include search of B's round (it showed A's plan too); 8 for a
    // role that does not see A (its refused reads, create and writes; its searches showed nothing of A)
    const trail = ((await bundle(`/AuditEvent?patient=Patient/${a}&date=ge${t0}&_count=1000`, tokens.coordinator)).entry ?? []).map((e) => e.resource as AuditEvent);
    const orgOf: Record<string, string> = { hospital: HOSPITAL, gp: GP, muniA: TARTU, muniB: ELVA, coordinator: COUNTY };
    for (const [role, [seesA]] of Object.entries(sees)) {
      const mine = trail.filter((e) => e.agent![0].who!.identifier?.value === orgOf[role]);
      // (the coordinator also wrote the Goal that Tartu linn was refused to write for A)
      expect([role, mine.length]).toEqual([role, seesA ? (role === 'coordinator' ? 15 : 14) : 8]);
      expect([role, mine.filter((e) => e.outcome === '4').length]).toEqual([role, seesA ? 0 : 8]);
    }
  });

  test('includes, chains, history and $everything leak nothing of people the caller may not see', async () => {
    const a = await patientIdOf(A);
    const b = await patientIdOf(B);
    // municipality A (Tartu linn) sees B only
    const inc = await bundle(`/CareTeam?_include=CareTeam:subject&_revinclude=Provenance:target&_count=50`, tokens.muniA);
    const text = JSON.stringify(inc);
    expect(text).toContain(`Patient/${b}`);
    expect(text).not.toContain(a);
    const chained = await bundle(`/CarePlan?patient.identifier=${NI}|${A}`, tokens.muniA);
    expect(chained.entry ?? []).toHaveLength(0);
    const doctorRev = await bundle(`/Practitioner?_revinclude=Encounter:participant&_count=50`, tokens.muniA);
    expect(JSON.stringify(doctorRev)).not.toContain(a);
    const planA = (await bundle(`/CarePlan?patient=Patient/${a}`, tokens.coordinator)).entry![0].resource!;
    const hidden = await call(`/CarePlan/${planA.id}/_history`, tokens.muniA);
    expect(hidden.status).toBe(403);
    expect(await hidden.text()).not.toContain(`Patient/${a}`);
    expect((await call(`/Patient/${a}/$everything`, tokens.muniA)).status).toBe(403);
    expect((await call(`/Patient/${a}/$everything`, tokens.muniB)).status).toBe(200);
    expect((await call(`/_history`, tokens.muniA)).status).toBe(403);
    expect((await call(`/CarePlan?_summary=count`, tokens.muniA)).status).toBe(403);
  });

  test('attacks: forged, alg none, expired, wrong audience, scope escalation — refused and audited', async () => {
    const t0 = new Date().toISOString();
    const a = await patientIdOf(A);
    const forged = sign(claims(COUNTY, 'coordinator'), { key: other.privateKey });
    const none = sign(claims(COUNTY, 'coordinator'), { alg: 'none' });
    const hmac = `${b64({ alg: 'HS256', kid: 'k1' })}.${b64(claims(COUNTY, 'coordinator'))}.${crypto.createHmac('sha256', publicKey.export({ format: 'pem', type: 'spki' })).update('x').digest('base64url')}`;
    const expired = sign(claims(COUNTY, 'coordinator', 'system/*.cruds', { exp: Math.floor(Date.now() / 1000) - 3600 }));
    const wrongAud = sign(claims(COUNTY, 'coordinator', 'system/*.cruds', { aud: 'https://other.example/fhir' }));
    const wrongIss = sign(claims(COUNTY, 'coordinator', 'system/*.cruds', { iss: 'https://evil.example' }));
    for (const t of [forged, none, hmac, expired, wrongAud, wrongIss, 'not.a.token']) {
      const res = await call(`/Patient/${a}`, t);
      expect(res.status).toBe(401);
      expect(JSON.stringify(await res.json())).not.toContain('Tamm');
    }
    const readOnly = sign(claims(HOSPITAL, 'hospital', 'system/Patient.read'));
    expect((await call(`/Patient/${a}`, readOnly)).status).toBe(200);
    expect((await call(`/CarePlan?_count=1`, readOnly)).status).toBe(403);
    expect((await call(`/Patient`, readOnly, { method: 'POST', body: JSON.stringify({ resourceType: 'Patient' }) })).status).toBe(403);
    const v2 = sign(claims(HOSPITAL, 'hospital', 'system/Patient.rs'));
    expect((await call(`/Patient?_count=1`, v2)).status).toBe(200);
    expect((await call(`/Patient/${a}`, v2, { method: 'DELETE' })).status).toBe(403);
    // 3 scope refusals, each an AuditEvent with outcome 4 (minor failure); the 7 bad tokens are counted per address
    // and minute and written as one summary (a flood of bad tokens cannot fill the audit trail)
    expect(await gw.auditRefusals(true)).toBeGreaterThanOrEqual(1);
    const since = (await audits()).filter((e) => e.recorded! >= t0);
    expect(since.filter((e) => e.outcome === '4' && e.agent![0].who!.identifier).length).toBeGreaterThanOrEqual(3);
    const summaries = since.filter((e) => e.outcome === '4' && e.agent![0].who!.display === 'unauthenticated caller');
    const counted = summaries.map((e) => Number(/^(\d+) request\(s\) refused at authentication/.exec(e.outcomeDesc ?? '')?.[1] ?? 0)).reduce((x, y) => x + y, 0);
    expect(counted).toBeGreaterThanOrEqual(7);
    expect(summaries.length).toBeLessThanOrEqual(2); // one per address and minute
  });

  test('writes only as oneself; AuditEvent and Provenance are append-only (405)', async () => {
    const a = await patientIdOf(A);
    const sr = { resourceType: 'ServiceRequest', status: 'active', intent: 'order', subject: { reference: `Patient/${a}` }, code: { text: 'x' }, requester: { reference: 'Organization/ehak-0793' } };
    expect((await call(`/ServiceRequest`, tokens.hospital, { method: 'POST', body: JSON.stringify(sr) })).status).toBe(403);
    // Tartu linn writes as itself, but only for a person it has a care relationship with (A lives in Elva)
    expect((await call(`/ServiceRequest`, tokens.muniA, { method: 'POST', body: JSON.stringify(sr) })).status).toBe(403);
    const b = await patientIdOf(B);
    expect((await call(`/ServiceRequest`, tokens.muniA, { method: 'POST', body: JSON.stringify({ ...sr, subject: { reference: `Patient/${b}` } }) })).status).toBe(201);
    const tx = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: sr, request: { method: 'POST', url: 'ServiceRequest' } }] };
    expect((await call(``, tokens.gp, { method: 'POST', body: JSON.stringify(tx) })).status).toBe(403);
    const ev = (await audits())[0];
    expect((await call(`/AuditEvent/${ev.id}`, tokens.coordinator, { method: 'PUT', body: JSON.stringify(ev) })).status).toBe(405);
    expect((await call(`/AuditEvent/${ev.id}`, tokens.coordinator, { method: 'DELETE' })).status).toBe(405);
    expect((await call(`/AuditEvent`, tokens.coordinator, { method: 'POST', body: JSON.stringify(ev) })).status).toBe(405);
    const prov = (await bundle(`/Provenance?_count=1`, tokens.coordinator)).entry![0].resource as Resource;
    expect((await call(`/Provenance/${prov.id}`, tokens.coordinator, { method: 'DELETE' })).status).toBe(405);
    // a municipality posts only its own export
    const csv = 'Otsuse nr;Isikukood;Teenus;Algus\n';
    const res = await fetch(`${url}/social-care/tartu-linn`, { method: 'POST', headers: { 'Content-Type': 'text/csv', Authorization: `Bearer ${tokens.muniB}` }, body: csv });
    expect(res.status).toBe(403);
    expect((await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: eeDischarge({ controlId: 'NOAUTH' }) })).status).toBe(401);
    expect((await fetch(`${url}/admin/messages`, { headers: { Authorization: `Bearer ${tokens.hospital}` } })).status).toBe(403);
  });

  test('SQL- and FHIRPath-looking parameters are plain values; oversized bodies 413', async () => {
    const sneaky = [`name=x' OR '1'='1`, `identifier=${NI}|${A}'); DROP TABLE resource;--`, `_id=1;SELECT`, `name=Patient.name.where(true)`, `_sort=name;DELETE`];
    for (const q of sneaky) {
      const res = await call(`/Patient?${q}`, tokens.muniA);
      expect([q, [200, 400, 422].includes(res.status)]).toEqual([q, true]);
      // (the self link echoes the caller's own query; no entry may carry person A)
      expect(JSON.stringify(((await res.json()) as Bundle).entry ?? [])).not.toContain(A);
    }
    expect((await bundle(`/Patient?_count=5`, tokens.coordinator)).entry!.length).toBeGreaterThan(0); // the table is still there
    const t0 = new Date().toISOString();
    const big = await call(`/Patient`, tokens.coordinator, { method: 'POST', body: 'x'.repeat(11 * 1024 * 1024) });
    expect(big.status).toBe(413);
    const refusal = (await audits()).filter((e) => e.recorded! >= t0 && e.outcomeDesc === 'HTTP 413');
    expect(refusal.map((e) => e.agent![0].who!.identifier?.value)).toEqual([COUNTY]);
  });

  test('minimum necessary: health providers get no case notes; restricted items only with clearance; legal basis audited', async () => {
    const t0 = new Date().toISOString();
    const a = await patientIdOf(A);
    // Elva (municipality B, A's municipality of residence) records home care and child case management for A
    const csv = `a,b,c,d,e\nMN-1,${A},x,2026-11-15,lives alone; refuses help on Mondays\nMN-2,${A},y,2026-11-16,child protection case notes\n`;
    const imp = await fetch(`${url}/social-care/elva-test`, { method: 'POST', headers: { 'Content-Type': 'text/csv', Authorization: `Bearer ${tokens.muniB}` }, body: csv });
    expect(imp.status).toBe(200);
    const srs = async (who: string) =>
      (await bundle(`/ServiceRequest?subject=Patient/${a}&_count=50`, who)).entry!.map((e) => e.resource as Resource & { code?: { coding?: { code?: string }[] }; note?: unknown; meta?: Resource['meta'] });
    const service = (r: { code?: { coding?: { code?: string }[] } }) => r.code?.coding?.[0]?.code;
    const social = (rs: Awaited<ReturnType<typeof srs>>) => rs.filter((r) => ['home-care', 'child-case-management'].includes(service(r) ?? ''));
    // the hospital and the GP: home care's type, provider, period — never the note; child case management not at all
    for (const who of [tokens.hospital, tokens.gp]) {
      const seen = social(await srs(who));
      expect(seen.map(service)).toEqual(['home-care']);
      expect(seen[0].note).toBeUndefined();
      expect(seen[0].meta!.security).toEqual(expect.arrayContaining([expect.objectContaining({ code: 'REDACTED' })]));
      expect(JSON.stringify(seen)).not.toContain('Mondays');
    }
    const homeCare = social(await srs(tokens.muniB)).find((r) => service(r) === 'home-care')!;
    const read = (await (await call(`/ServiceRequest/${homeCare.id}`, tokens.hospital)).json()) as Resource & { note?: unknown };
    expect(read.note).toBeUndefined();
    // what a caller sees only redacted it may not write back (it would erase the notes), alone or in a Bundle
    const { meta: _m, ...redacted } = read;
    expect((await call(`/ServiceRequest/${homeCare.id}`, tokens.hospital, { method: 'PUT', body: JSON.stringify(redacted) })).status).toBe(403);
    const tx = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: redacted, request: { method: 'PUT', url: `ServiceRequest/${homeCare.id}` } }] };
    expect((await call(``, tokens.hospital, { method: 'POST', body: JSON.stringify(tx) })).status).toBe(403);
    expect((await call(`/ServiceRequest/${homeCare.id}`, tokens.hospital, { method: 'DELETE' })).status).toBe(403);
    expect(JSON.stringify(await (await call(`/ServiceRequest/${homeCare.id}`, tokens.muniB)).json())).toContain('Mondays');
    // the municipality sees its own notes, but the restricted item only with a cleared token
    expect(social(await srs(tokens.muniB)).map(service)).toEqual(['home-care']);
    expect(JSON.stringify(await srs(tokens.muniB))).toContain('Mondays');
    expect(social(await srs(tokens.coordinator)).map(service)).toEqual(['home-care']);
    const cleared = sign(claims(ELVA, 'municipality', 'system/*.cruds', { clearance: 'R', user: 'Lastekaitsespetsialist' }));
    const withClearance = social(await srs(cleared));
    expect(withClearance.map(service).sort()).toEqual(['child-case-management', 'home-care']);
    const restricted = withClearance.find((r) => service(r) === 'child-case-management')!;
    expect(restricted.meta!.security).toEqual([{ system: 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality', code: 'R' }]);
    const byId = await call(`/ServiceRequest/${restricted.id}`, tokens.muniB);
    expect(byId.status).toBe(403);
    expect(JSON.stringify(await byId.json())).not.toContain('child protection');
    expect((await call(`/ServiceRequest/${restricted.id}`, tokens.hospital)).status).toBe(403);
    // nor can search criteria tell who has a restricted item: reverse chains, chains, counts
    const hasRestricted = `/Patient?_has:ServiceRequest:subject:code=https://care-gateway.ee/fhir/CodeSystem/social-services|child-case-management`;
    // reverse chains select by other resources' data: only for callers who see every person, and then within their labels
    for (const who of [tokens.hospital, tokens.muniB]) expect((await call(hasRestricted, who)).status).toBe(403);
    expect((await bundle(hasRestricted, tokens.coordinator)).entry ?? []).toHaveLength(0);
    expect((await call(hasRestricted, cleared)).status).toBe(403);
    const clearedCounty = sign(claims(COUNTY, 'coordinator', 'system/*.cruds', { clearance: 'R' }));
    expect((await bundle(hasRestricted, clearedCounty)).entry!.map((e) => e.resource!.id)).toEqual([a]);
    const byCode = `/ServiceRequest?code=https://care-gateway.ee/fhir/CodeSystem/social-services|child-case-management&_summary=count`;
    expect((await bundle(byCode, tokens.coordinator)).total).toBe(0);
    const clearedCoordinator = sign(claims(COUNTY, 'coordinator', 'system/*.cruds', { clearance: ['R'] }));
    expect((await bundle(byCode, clearedCoordinator)).total).toBe(1);
    const provenance = `/Provenance?target:ServiceRequest.code=https://care-gateway.ee/fhir/CodeSystem/social-services|child-case-management`;
    // a chain from a shared resource into someone's record selects by their data: only for callers who see everyone
    expect((await call(provenance, tokens.muniB)).status).toBe(403);
    expect((await call(provenance, cleared)).status).toBe(403);
    expect((await bundle(provenance, tokens.coordinator)).entry ?? []).toHaveLength(0);
    expect((await bundle(provenance, clearedCoordinator)).entry!.length).toBeGreaterThan(0);
    expect(JSON.stringify(await bundle(`/Patient/${a}/$everything?_count=500`, tokens.coordinator))).not.toContain('child protection');
    const restrictedHistory = await call(`/ServiceRequest/${restricted.id}/_history`, tokens.muniB);
    expect(restrictedHistory.status).toBe(403);
    expect(await restrictedHistory.text()).not.toContain('child protection');
    // each cross-sector disclosure (social data to the hospital, clinical data to the municipality) names its legal basis
    await bundle(`/Condition?subject=Patient/${a}`, tokens.muniB);
    const events = (await audits()).filter((e) => e.recorded! >= t0);
    const basis = (org: string, cls: string) =>
      events.filter((e) => e.agent![0].who!.identifier?.value === org).flatMap((e) => e.entity ?? []).filter((x) => x.detail?.some((d) => d.type === 'data-class' && d.valueString === cls));
    const toHospital = basis(HOSPITAL, 'social-care');
    expect(toHospital.length).toBeGreaterThan(0);
    expect(toHospital[0].what!.reference).toBe(`Patient/${a}`);
    expect(toHospital[0].detail!.find((d) => d.type === 'legal-basis')!.valueString).toMatch(/GDPR art\. 9\(2\)\(h\)/);
    expect(basis(ELVA, 'clinical').length).toBeGreaterThan(0);
    // the import itself is audited: municipality B wrote through /social-care
    expect(events.some((e) => e.agent![0].who!.identifier?.value === ELVA && e.action === 'C' && e.outcome === '0' && Buffer.from(e.entity!.find((x) => x.query)!.query!, 'base64').toString() === '/social-care/elva-test')).toBe(true);
  });

  test("consent: a person closes social-care data to health providers and clinical data to municipalities", async () => {
    const a = await patientIdOf(A);
    const consent = (id: string, actorKind: string, dataClass: string) => ({
      resourceType: 'Consent',
      id,
      status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] }],
      patient: { reference: `Patient/${a}` },
      dateTime: '2026-11-20',
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTOUT' }] },
      provision: {
        type: 'permit',
        provision: [
          {
            type: 'deny',
            actor: [{ role: { coding: [{ system: 'https://care-gateway.ee/fhir/CodeSystem/organisation-kind', code: actorKind }] }, reference: { display: `every ${actorKind}` } }],
            class: [{ system: 'https://care-gateway.ee/fhir/CodeSystem/data-class', code: dataClass }],
          },
        ],
      },
    });
    const socialOf = async (who: string) =>
      ((await bundle(`/ServiceRequest?subject=Patient/${a}&_count=50`, who)).entry ?? []).filter((e) => JSON.stringify(e.resource).includes('social-services'));
    expect((await socialOf(tokens.hospital)).length).toBe(1);
    const put = await call(`/Consent/closed-social-${a}`.slice(0, 64 + 8), tokens.coordinator, { method: 'PUT', body: JSON.stringify(consent(`closed-social-${a}`.slice(0, 64), 'health-provider', 'social-care')) });
    expect(put.status).toBe(201);
    expect(await socialOf(tokens.hospital)).toHaveLength(0);
    expect(await socialOf(tokens.gp)).toHaveLength(0);
    expect((await socialOf(tokens.muniB)).length).toBe(1); // the municipality still sees its own decision
    const sr = (await socialOf(tokens.muniB))[0].resource!;
    const refused = await call(`/ServiceRequest/${sr.id}`, tokens.hospital);
    expect(refused.status).toBe(403);
    expect(JSON.stringify(await refused.json())).toMatch(/consent/);
    expect((await call(`/Patient/${a}`, tokens.hospital)).status).toBe(200); // the person and the plan stay shared
    // clinical data closed to municipalities
    expect((await bundle(`/Condition?subject=Patient/${a}`, tokens.muniB)).entry?.length ?? 0).toBeGreaterThan(0);
    expect((await call(`/Consent`, tokens.coordinator, { method: 'POST', body: JSON.stringify({ ...consent('x', 'municipality', 'clinical'), id: undefined }) })).status).toBe(201);
    expect((await bundle(`/Condition?subject=Patient/${a}`, tokens.muniB)).entry ?? []).toHaveLength(0);
    const enc = (await bundle(`/Encounter?subject=Patient/${a}`, tokens.hospital)).entry![0].resource!;
    expect((await call(`/Encounter/${enc.id}`, tokens.muniB)).status).toBe(403);
    expect(JSON.stringify(await bundle(`/Patient/${a}/$everything?_count=500`, tokens.muniB))).not.toContain('"resourceType":"Condition"');
    expect((await bundle(`/Condition?subject=Patient/${a}`, tokens.hospital)).entry!.length).toBeGreaterThan(0);
    expect((await call(`/CarePlan?patient=Patient/${a}`, tokens.muniB)).status).toBe(200);
  });

  test('"who looked at my data": the patient\'s audit query; tampering with a stored AuditEvent is detected', async () => {
    const a = await patientIdOf(A);
    const mine = (await bundle(`/AuditEvent?patient=Patient/${a}&_count=500`, tokens.coordinator)).entry!.map((e) => e.resource as AuditEvent);
    const who = new Set(mine.map((e) => e.agent![0].who!.identifier?.value));
    for (const org of [HOSPITAL, GP, TARTU, ELVA]) expect(who.has(org)).toBe(true);
    expect(mine.some((e) => e.outcome === '4' && e.agent![0].who!.identifier?.value === TARTU)).toBe(true); // municipality A was refused
    const ok = await (await fetch(`${url}/admin/audit/$verify`, { headers: { Authorization: `Bearer ${tokens.coordinator}` } })).json();
    expect(ok).toMatchObject({ ok: true });
    // alter one stored event directly in the database
    const target = mine[0];
    const store = gw.store;
    await store.db.query(`UPDATE resource SET content = replace(content, '"site":"care-gateway"', '"site":"elsewhere"') WHERE resource_type = 'AuditEvent' AND id = $1`, [target.id]);
    const broken = (await (await fetch(`${url}/admin/audit/$verify`, { headers: { Authorization: `Bearer ${tokens.coordinator}` } })).json()) as { ok: boolean; brokenAt?: string };
    expect(broken.ok).toBe(false);
    expect(broken.brokenAt).toBe(target.id);
  });
});

test('bound to a public address without authentication, the gateway refuses to start and says why', async () => {
  const dir = tempDir('cg-public-');
  try {
    await expect(spawnGateway({ HOST: '0.0.0.0', DATA_DIR: dir })).rejects.toThrow(/refusing to start: HOST=0\.0\.0\.0 .*AUTH_JWKS/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

