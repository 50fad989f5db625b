/**
 * The FHIR REST core over real HTTP, on every backend.
 *
 * Specifications covered:
 * - https://hl7.org/fhir/R4/http.html: capabilities, create, read, vread, update (If-Match), conditional create
 *   (If-None-Exist), history, search (GET and POST _search), ETag / If-None-Match, Prefer: return
 * - https://hl7.org/fhir/R4/operationoutcome.html: every error is an OperationOutcome
 */
import type { Bundle, CapabilityStatement, OperationOutcome, Patient } from '@medplum/fhirtypes';
import type { Gateway } from '../../src/app.js';
import { backends, type Backend } from '../helpers/backends.js';
import { startTestGateway } from '../helpers/gateway.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const FHIR_JSON = { 'Content-Type': 'application/fhir+json' };

describe.each(backends())('FHIR REST on %s', (_name, makeBackend) => {
  let backend: Backend;
  let gw: Gateway;
  let base: string;
  let url: string;

  beforeAll(async () => {
    backend = makeBackend();
    await backend.prepare(); // the empty store the gateway then opens
    ({ gw, base, url } = await startTestGateway(backend));
  });
  afterAll(async () => {
    await gw.close();
    await backend.cleanup();
  });

  const post = (path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${base}${path}`, { method: 'POST', headers: { ...FHIR_JSON, ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const put = (path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${base}${path}`, { method: 'PUT', headers: { ...FHIR_JSON, ...headers }, body: JSON.stringify(body) });

  const tamm: Patient = {
    resourceType: 'Patient',
    identifier: [{ system: NI, value: '37302102711' }],
    name: [{ family: 'Tamm', given: ['Jüri'] }],
    gender: 'male',
    birthDate: '1973-02-10',
  };

  test('GET /fhir/metadata is a CapabilityStatement listing Patient interactions and search parameters', async () => {
    const res = await fetch(`${base}/metadata`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/fhir+json');
    const cs = (await res.json()) as CapabilityStatement;
    expect(cs.fhirVersion).toBe('4.0.1');
    const p = cs.rest![0].resource!.find((r) => r.type === 'Patient')!;
    expect(p.interaction!.map((i) => i.code)).toEqual(expect.arrayContaining(['read', 'vread', 'update', 'create', 'search-type', 'history-instance']));
    expect(p.searchParam!.map((s) => s.name)).toEqual(expect.arrayContaining(['_id', '_lastUpdated', 'identifier', 'name', 'birthdate']));
    expect(p.searchParam!.map((s) => s.name)).not.toContain('phonetic-composite-does-not-exist');
    // the includes the GP pull and the municipality query use, the IHE care-planning actors, the security service
    const plan = cs.rest![0].resource!.find((r) => r.type === 'CarePlan')!;
    expect(plan.searchInclude).toEqual(expect.arrayContaining(['CarePlan:care-team', 'CarePlan:subject', 'CarePlan:goal']));
    expect(plan.searchRevInclude).toEqual(expect.arrayContaining(['Provenance:target']));
    expect(plan.documentation).toMatch(/Dynamic Care Planning/);
    expect(cs.rest![0].resource!.find((r) => r.type === 'CareTeam')!.documentation).toMatch(/Care Team Management/);
    expect(cs.rest![0].security!.service![0].coding![0].code).toBe('SMART-on-FHIR');
    // and the statement itself is valid R4
    const v = await post('/CapabilityStatement/$validate', cs);
    expect(JSON.stringify(await v.json())).not.toContain('"severity":"error"');
  });

  test('a Patient can be created, read, updated, searched by identifier and its history read', async () => {
    const created = await post('/Patient', tamm);
    expect(created.status).toBe(201);
    const p = (await created.json()) as Patient;
    expect(created.headers.get('location')).toBe(`${base}/Patient/${p.id}/_history/1`);
    expect(created.headers.get('etag')).toBe('W/"1"');

    const read = await fetch(`${base}/Patient/${p.id}`);
    expect(read.status).toBe(200);
    expect(((await read.json()) as Patient).name?.[0].given).toEqual(['Jüri']);
    const notModified = await fetch(`${base}/Patient/${p.id}`, { headers: { 'If-None-Match': 'W/"1"' } });
    expect(notModified.status).toBe(304);

    const updated = await put(`/Patient/${p.id}`, { ...p, telecom: [{ system: 'phone', value: '+372 5555 1234' }] }, { 'If-Match': 'W/"1"' });
    expect(updated.status).toBe(200);
    expect(((await updated.json()) as Patient).meta?.versionId).toBe('2');

    const stale = await put(`/Patient/${p.id}`, { ...p, gender: 'other' }, { 'If-Match': 'W/"1"' });
    expect(stale.status).toBe(412);
    expect(((await stale.json()) as OperationOutcome).resourceType).toBe('OperationOutcome');

    const search = await fetch(`${base}/Patient?identifier=${encodeURIComponent(`${NI}|37302102711`)}`);
    const bundle = (await search.json()) as Bundle<Patient>;
    expect(bundle.type).toBe('searchset');
    expect(bundle.entry?.map((e) => e.resource?.id)).toEqual([p.id]);
    expect(bundle.entry?.[0].fullUrl).toBe(`${base}/Patient/${p.id}`);

    const history = (await (await fetch(`${base}/Patient/${p.id}/_history`)).json()) as Bundle<Patient>;
    expect(history.type).toBe('history');
    expect(history.entry?.map((e) => e.resource?.meta?.versionId)).toEqual(['2', '1']);
    const v1 = (await (await fetch(`${base}/Patient/${p.id}/_history/1`)).json()) as Patient;
    expect(v1.telecom).toBeUndefined();
  });

  test('conditional create with If-None-Exist returns the existing resource (200) instead of a duplicate', async () => {
    const body = { ...tamm, identifier: [{ system: NI, value: '36805280109' }] };
    const crit = `identifier=${NI}|36805280109`;
    const a = await post('/Patient', body, { 'If-None-Exist': crit });
    const b = await post('/Patient', body, { 'If-None-Exist': crit });
    expect(a.status).toBe(201);
    expect(b.status).toBe(200);
    expect(((await b.json()) as Patient).id).toBe(((await a.json()) as Patient).id);
  });

  test('search pages carry a next link that a client can follow to the end', async () => {
    for (let i = 0; i < 7; i++) await post('/Patient', { ...tamm, identifier: [{ system: 'urn:test:page', value: 'p' }], name: [{ family: `Lehekülg${i}` }] });
    let next: string | undefined = `${base}/Patient?identifier=urn:test:page|p&_count=3`;
    const families: string[] = [];
    while (next) {
      const b = (await (await fetch(next)).json()) as Bundle<Patient>;
      families.push(...(b.entry ?? []).map((e) => e.resource!.name![0].family!));
      next = b.link?.find((l) => l.relation === 'next')?.url;
    }
    expect(families).toEqual(Array.from({ length: 7 }, (_, i) => `Lehekülg${i}`));
  });

  test('POST _search takes parameters from a form body', async () => {
    const res = await fetch(`${base}/Patient/_search`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: `family=Lehekülg3`,
    });
    const b = (await res.json()) as Bundle<Patient>;
    expect(b.entry?.map((e) => e.resource?.name?.[0].family)).toEqual(['Lehekülg3']);
  });

  test.each([
    ['malformed JSON', '{"resourceType": "Patient",', 400, 'structure'],
    ['a resourceType that does not match the URL', { resourceType: 'Observation' }, 422, 'invalid'],
    ['an unknown element', { resourceType: 'Patient', shoeSize: 44 }, 422, 'invalid'],
  ])('POST with %s is refused with an OperationOutcome', async (_what, body, status, code) => {
    const res = await post('/Patient', body);
    expect(res.status).toBe(status);
    const oo = (await res.json()) as OperationOutcome;
    expect(oo.resourceType).toBe('OperationOutcome');
    expect(oo.issue[0].code).toBe(code);
  });

  test('an invalid write reports every problem with its FHIRPath', async () => {
    const res = await post('/Patient', { resourceType: 'Patient', gender: 'bloke', birthDate: 'yesterday', shoeSize: 1 });
    expect(res.status).toBe(422);
    const oo = (await res.json()) as OperationOutcome;
    const where = oo.issue.flatMap((i) => i.expression ?? []);
    expect(where).toEqual(expect.arrayContaining(['Patient.gender', 'Patient.birthDate', 'Patient.shoeSize']));
  });

  test('every body received is kept in the inbox, rejected ones with their reason', async () => {
    await post('/Patient', '{"not json');
    const list = (await (await fetch(`${url}/admin/messages?status=rejected&channel=fhir`)).json()) as { entries: { id: string; reason: string }[] };
    const e = list.entries.find((x) => /not valid JSON/.test(x.reason));
    expect(e).toBeDefined();
    const one = (await (await fetch(`${url}/admin/messages/${e!.id}`)).json()) as { payload: { text: string } };
    expect(one.payload.text).toBe('{"not json');
  });

  test('unknown types, ids and routes are 404 OperationOutcomes', async () => {
    expect((await fetch(`${base}/Bogus/1`)).status).toBe(404);
    expect((await fetch(`${base}/Patient/no-such-id`)).status).toBe(404);
    const r = await fetch(`${url}/nowhere`);
    expect(r.status).toBe(404);
    expect(((await r.json()) as OperationOutcome).resourceType).toBe('OperationOutcome');
  });

  test('a body over the configured limit is refused with 413', async () => {
    const big = JSON.stringify({ resourceType: 'Patient', text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(11 * 1024 * 1024)}</div>` } });
    const res = await fetch(`${base}/Patient`, { method: 'POST', headers: FHIR_JSON, body: big });
    expect(res.status).toBe(413);
  });

  test('healthz and readyz answer', async () => {
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { store: string }).store).toBe(backend.name);
  });
});
