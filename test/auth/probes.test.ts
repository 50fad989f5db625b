/**
 * Regression tests for an attacker's second round against the access layer (each once worked): HL7 v2 over HTTP
 * used to name GPs, move residences and merge people for any token; conditional criteria and chains answered yes/no
 * questions about hidden people; ended participations kept access; scopes did not reach included resources; paging
 * cursors and `next` links named or counted hidden resources; a deleted Patient could be "re-created" to read what was
 * left; an organisation's own audit record named the person behind a refused request; a chain fanned out
 * exponentially; some malformed values answered 500.
 */
import type { AuditEvent, Bundle, Patient, Resource } from '@medplum/fhirtypes';
import { backends, type Backend } from '../helpers/backends.js';
import { ik, NI, registryCode, sign, startSecuredGateway, type SecuredGateway } from '../helpers/auth.js';
import { eeDischarge, eeMerge, gpReferral } from '../fixtures/hl7v2/messages.js';

const A = ik('3730210271'); // Elva; GP 10856624
const B = ik('4450123100'); // Tartu linn; GP 10856624
const C = ik('3800101108'); // Elva; no GP: the hospital and Elva see C

describe.each(backends())('second-round probes on %s', (_name, makeBackend) => {
  let backend: Backend;
  let g: SecuredGateway;
  let c: string;
  let b: string;
  let hospital2: string;
  let gp2: string;
  const json = async <T = Bundle>(res: Response | Promise<Response>): Promise<T> => (await (await res).json()) as T;
  const hl7 = async (token: string, message: string) => {
    const res = await fetch(`${g.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain', Authorization: `Bearer ${token}` }, body: message });
    return { status: res.status, body: await res.text() };
  };
  const withoutPd1 = (m: string) => m.split('\r').filter((s) => !s.startsWith('PD1')).join('\r');

  beforeAll(async () => {
    backend = makeBackend();
    await backend.prepare();
    g = await startSecuredGateway(backend, [[A, '0171'], [B, '0793']]);
    hospital2 = sign(g.claims(registryCode('1122334'), 'hospital'));
    gp2 = sign(g.claims(registryCode('2233445'), 'gp'));
    expect((await hl7(g.tokens.hospital, withoutPd1(eeDischarge({ controlId: 'P-C', isikukood: C, ehak: '0171', visit: 'V-P-C', diagnosis: 'F32.9' })))).body).toContain('MSA|AA');
    c = await g.patientIdOf(C);
    b = await g.patientIdOf(B);
  });
  afterAll(async () => {
    await g.close();
    await backend.cleanup();
  });

  test('HL7 v2 over HTTP is the caller\'s own: its facility, its kinds of message, its patients, no self-naming as GP', async () => {
    // a GP sends as the hospital (MSH-4 ELVA_HAIGLA), an ADT naming itself GP of C
    const a08 = withoutPd1(eeDischarge({ controlId: 'P-1', isikukood: C, ehak: '0171', trigger: 'A08', visit: 'V-P-C' }));
    const asHospital = await hl7(g.tokens.gp, a08);
    expect(asHospital.body).toMatch(/MSA\|AR/);
    expect(asHospital.body).toContain('MSH-4');
    // from its own facility: ADT is the hospital's
    const own = a08.replace('ELVA_HIS|ELVA_HAIGLA', 'PERE_EHR|PEREARST_ELVA');
    expect((await hl7(g.tokens.gp, own)).body).toMatch(/MSA\|AR/);
    // a merge from a GP (ADT), and a referral for a person the GP does not see
    expect((await hl7(g.tokens.gp, eeMerge(B, C, 'P-M').replace('ELVA_HIS|ELVA_HAIGLA', 'PERE_EHR|PEREARST_ELVA'))).body).toMatch(/MSA\|AR/);
    expect((await hl7(g.tokens.gp, gpReferral(C, 'P-R1'))).body).toMatch(/MSA\|AR/);
    // a GP of another practice, and a hospital of no facility the gateway knows
    expect((await hl7(gp2, gpReferral(C, 'P-R2'))).body).toMatch(/MSA\|AR/);
    expect((await hl7(hospital2, eeDischarge({ controlId: 'P-2', isikukood: C, visit: 'V-P-2' }))).body).toMatch(/MSA\|AR/);
    // nothing changed for C: still no GP, still hidden from the GP
    expect(((await json<Patient>(g.call(`/Patient/${c}`, g.tokens.coordinator))).generalPractitioner ?? []).length).toBe(0);
    expect((await g.call(`/Patient/${c}`, g.tokens.gp)).status).toBe(403);
    // the GP's own referral for its own patient goes through (A lives in Elva, as the referral's address says)
    expect((await hl7(g.tokens.gp, gpReferral(A, 'P-R3'))).body).toContain('MSA|AA');
  });

  test('conditional criteria name identifiers only: no yes/no questions about hidden records', async () => {
    const del = async (url: string) => (await json(g.call('', hospital2, { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'DELETE', url } }] }) }))).entry![0].response!.status;
    expect(await del(`Condition?patient=Patient/${c}&code=F32.9`)).toBe('403');
    expect(await del(`Condition?patient=Patient/${c}&code=I10`)).toBe('403');
    expect(await del(`Patient?identifier=${NI}|${C}&_has:Condition:patient:code=F32.9`)).toBe('403');
    const probe = { resourceType: 'Basic', code: { text: 'probe' } };
    expect((await g.call('/Basic', hospital2, { method: 'POST', body: JSON.stringify(probe), headers: { 'If-None-Exist': `_has:Condition:patient:code=F32.9` } })).status).toBe(403);
  });

  test('chains reach only shared resources or the record\'s own Patient', async () => {
    const obs = { resourceType: 'Observation', status: 'final', code: { text: 'probe' }, subject: { reference: `Patient/${b}` }, performer: [{ reference: `Patient/${c}` }] };
    // a record of B that names C (an include of it is filtered; a chain through it is what must not work)
    const created = await g.call('/Observation', g.tokens.muniA, { method: 'POST', body: JSON.stringify(obs) });
    expect(created.status).toBe(201);
    const id = ((await created.json()) as Resource).id;
    expect((await g.call(`/Observation?_id=${id}&performer:Patient.birthdate=1980-01-01`, g.tokens.muniA)).status).toBe(403);
    expect((await g.call(`/Observation?_id=${id}&subject:Patient.birthdate=1945-01-23`, g.tokens.muniA)).status).toBe(200);
    const ad = { resourceType: 'ActivityDefinition', status: 'draft', relatedArtifact: [{ type: 'depends-on', resource: `Patient/${c}` }] };
    const adId = ((await json<Resource>(g.call('/ActivityDefinition', hospital2, { method: 'POST', body: JSON.stringify(ad) }))).id);
    expect((await g.call(`/ActivityDefinition?_id=${adId}&depends-on:Patient.birthdate=1980`, hospital2)).status).toBe(403);
    // a chain that fans out is refused at once, for anyone
    const started = Date.now();
    const deep = await g.call('/Basic?subject.subject.subject.subject._id=x', g.tokens.coordinator);
    expect(deep.status).toBe(400);
    expect(Date.now() - started).toBeLessThan(5000);
    expect((await g.call('/Basic?subject.subject.subject._id=x', g.tokens.coordinator)).status).toBe(400);
  });

  test('scopes reach included resources and $everything', async () => {
    const carePlanOnly = sign(g.claims('75006546', 'municipality', 'system/CarePlan.rs'));
    const inc = await json(g.call(`/CarePlan?subject=Patient/${b}&_include=*&_revinclude=*`, carePlanOnly));
    expect([...new Set((inc.entry ?? []).map((e) => e.resource!.resourceType))]).toEqual(['CarePlan']);
    const patientOnly = sign(g.claims('75006546', 'municipality', 'system/Patient.r'));
    const all = await json(g.call(`/Patient/${b}/$everything`, patientOnly));
    expect([...new Set((all.entry ?? []).map((e) => e.resource!.resourceType))]).toEqual(['Patient']);
  });

  test('paging never names or counts what the caller may not see', async () => {
    const page = await json(g.call('/Condition/_history?_count=1', hospital2));
    expect(page.entry ?? []).toHaveLength(0);
    expect(page.link?.find((l) => l.relation === 'next')).toBeUndefined();
    const search = await json(g.call('/Condition?_count=1', hospital2));
    expect(search.entry ?? []).toHaveLength(0);
    expect(search.link?.find((l) => l.relation === 'next')).toBeUndefined();
    // a caller who sees some: its next links carry sealed cursors
    const mine = await json(g.call('/Condition?_count=1', g.tokens.hospital));
    const next = mine.link!.find((l) => l.relation === 'next')!.url;
    const cursor = new URL(next).searchParams.get('_cursor')!;
    expect(Buffer.from(cursor, 'base64url').toString('utf8')).not.toMatch(/Condition|"s"|\d{10,}/);
    expect((await json(fetch(next, { headers: { Authorization: `Bearer ${g.tokens.hospital}` } }))).entry!.length).toBe(1);
    const forged = next.replace(/_cursor=[^&]+/, `_cursor=${Buffer.from('{"s":"1"}').toString('base64url')}`);
    expect((await fetch(forged, { headers: { Authorization: `Bearer ${g.tokens.hospital}` } })).status).toBe(400);
  });

  test('ended participation ends access; a deleted Patient cannot be re-created to read what is left', async () => {
    const E = ik('3900202109');
    await hl7(g.tokens.hospital, eeDischarge({ controlId: 'P-E1', isikukood: E, ehak: '0171', visit: 'V-P-E', eventTime: '20261110120000' }));
    const e = await g.patientIdOf(E);
    expect((await g.call(`/Patient/${e}`, g.tokens.muniB)).status).toBe(200);
    // the hospital's feed moves E to Tartu linn: Elva's participation ends, and with it Elva's access
    expect((await hl7(g.tokens.hospital, eeDischarge({ controlId: 'P-E2', isikukood: E, ehak: '0793', trigger: 'A08', visit: 'V-P-E', eventTime: '20261111120000' }))).body).toContain('MSA|AA');
    expect((await g.call(`/Patient/${e}`, g.tokens.muniB)).status).toBe(403);
    expect((await g.call(`/Patient/${e}`, g.tokens.muniA)).status).toBe(200);
    // deleted by the coordinator; Tartu linn "re-creates" it in a batch and reads the rest
    const plain = await json<Patient>(g.call(`/Patient/${e}`, g.tokens.coordinator));
    expect((await g.call(`/Patient/${e}`, g.tokens.coordinator, { method: 'DELETE' })).status).toBe(200);
    const { meta: _m, ...content } = plain;
    const batch = { resourceType: 'Bundle', type: 'batch', entry: [{ resource: { ...content, address: [] }, request: { method: 'PUT', url: `Patient/${e}` } }, { request: { method: 'GET', url: `Condition?patient=Patient/${e}` } }] };
    const res = await json(g.call('', hospital2, { method: 'POST', body: JSON.stringify(batch) }));
    expect(res.entry![0].response!.status).toBe('403');
    expect(((res.entry![1].resource as Bundle).entry ?? []).length).toBe(0);
  });

  test('a restricted decision\'s case worker in the shared team is seen only with clearance', async () => {
    const header = 'Otsuse nr;Otsuse kuupäev;Isikukood;Eesnimi;Perekonnanimi;Aadress;Teenus;Algus;Lõpp;Maht;Ühik;Periood;Juhtumitöötaja;Ametikoht;Telefon;E-post;Teenuseosutaja;Hooldaja;Seos;Hooldaja telefon;Märkus';
    const csv = `${header}\nTL-P-1;10.11.2026;${B};Õie;Kõiv;Riia tn 15-3, Tartu;Lapse juhtumikorraldus;10.11.2026;;;;;Kati Kask;lastekaitsespetsialist;;;;;;;\n`;
    const imp = await fetch(`${g.url}/social-care/tartu-linn`, { method: 'POST', headers: { 'Content-Type': 'text/csv', Authorization: `Bearer ${g.tokens.muniA}` }, body: csv });
    expect(imp.status).toBe(200);
    const team = async (token: string) => JSON.stringify(await json(g.call(`/CareTeam?subject=Patient/${b}`, token)));
    expect(await team(g.tokens.coordinator)).toContain('child-protection-specialist'); // cleared for R
    expect(await team(g.tokens.hospital)).not.toContain('child-protection-specialist');
    expect(await team(g.tokens.hospital)).not.toContain('Kati Kask');
    expect(await team(g.tokens.muniA)).not.toContain('child-protection-specialist');
  });

  test('a stored Bundle (whole resources of anyone inside) is only for callers who see everyone', async () => {
    const doc = { resourceType: 'Bundle', type: 'collection', entry: [{ resource: { resourceType: 'Patient', identifier: [{ system: NI, value: C }], name: [{ family: 'Hidden' }] } }] };
    const created = await g.call('/Bundle', g.tokens.coordinator, { method: 'POST', body: JSON.stringify(doc) });
    expect(created.status).toBe(201);
    const id = ((await created.json()) as Resource).id;
    expect((await g.call(`/Bundle/${id}`, hospital2)).status).toBe(403);
    expect(await (await g.call('/Bundle?_count=100', hospital2)).text()).not.toContain('Hidden');
    expect((await g.call(`/Bundle/${id}`, g.tokens.coordinator)).status).toBe(200);
  });

  test('unchanged writes, own audit records and malformed values tell nothing', async () => {
    const stored = await json<Patient>(g.call(`/Patient/${c}`, g.tokens.coordinator));
    expect((await g.call(`/Patient/${c}`, hospital2, { method: 'PUT', body: JSON.stringify(stored) })).status).toBe(403);
    const condition = ((await json(g.call(`/Condition?patient=Patient/${c}`, g.tokens.coordinator))).entry ?? [])[0]?.resource;
    expect((await g.call(`/Condition/${condition!.id}`, g.tokens.muniA)).status).toBe(403);
    const mine = ((await json(g.call('/AuditEvent?_count=500', g.tokens.muniA))).entry ?? []).map((x) => x.resource as AuditEvent);
    expect(JSON.stringify(mine)).not.toContain(`Patient/${c}`);
    for (const path of ['/Patient?birthdate=2024-13-01T10:00', '/Patient/_history?_since=1', `/Patient/${b}/$everything?_since=1`, '/Patient?birthdate=9999-12-31T23:59:59-14:00']) {
      const res = await g.call(path, g.tokens.coordinator);
      expect([path, res.status]).toEqual([path, 400]);
    }
  });
});
