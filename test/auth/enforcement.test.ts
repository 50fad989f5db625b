/**
 * Access control that cannot be walked around: the doors an organisation holding a valid token tried — every
 * Bundle entry form, conditional forms, URL spellings, $process-message, $validate, reverse chains, self-granted
 * membership, echoing conditional creates, other organisations' audit records, an audit trail that cannot be
 * written — and a matrix generated from the CapabilityStatement: every resource type's search and history, and
 * every interaction on each of a person's stored resources, for a caller with no care relationship with them.
 *
 * People: A lives in Elva vald (municipality B sees A), B in Tartu linn (municipality A sees B only).
 */
import type { AuditEvent, Bundle, CapabilityStatement, CareTeam, Patient, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { backends, type Backend } from '../helpers/backends.js';
import { ik, NI, registryCode, sign, startSecuredGateway, TARTU, type SecuredGateway } from '../helpers/auth.js';

const A = ik('3730210271');
const B = ik('4450123100');

describe.each(backends())('access enforcement on %s', (_name, makeBackend) => {
  let backend: Backend;
  let g: SecuredGateway;
  let a: string; // A's Patient id
  let b: string;
  let everythingA: Resource[];
  const json = async <T = Bundle>(res: Response | Promise<Response>): Promise<T> => (await (await res).json()) as T;
  const text = async (res: Response | Promise<Response>) => (await res).text();
  /** nothing of person A in a response: no id of any of A's resources, no isikukood */
  const leaksA = (body: string) => body.includes(A) || everythingA.some((r) => body.includes(`${r.resourceType}/${r.id}`) || (r.id!.length > 8 && body.includes(`"${r.id}"`)));

  beforeAll(async () => {
    backend = makeBackend();
    await backend.prepare();
    g = await startSecuredGateway(backend, [[A, '0171'], [B, '0793']]);
    a = await g.patientIdOf(A);
    b = await g.patientIdOf(B);
    // Elva records home care and a restricted child case for A
    const csv = `a,b,c,d,e\nEN-1,${A},x,2026-11-15,lives alone; refuses help on Mondays\nEN-2,${A},y,2026-11-16,child protection case notes\n`;
    const imp = await fetch(`${g.url}/social-care/elva-test`, { method: 'POST', headers: { 'Content-Type': 'text/csv', Authorization: `Bearer ${g.tokens.muniB}` }, body: csv });
    expect(imp.status).toBe(200);
    everythingA = ((await json(g.call(`/Patient/${a}/$everything?_count=1000`, g.tokens.coordinator))).entry ?? []).map((e) => e.resource!);
    expect(everythingA.length).toBeGreaterThan(8);
    expect(JSON.stringify(everythingA)).toContain('child protection');
  });
  afterAll(async () => {
    await g.close();
    await backend.cleanup();
  });

  const socialOfA = () => everythingA.filter((r): r is ServiceRequest => r.resourceType === 'ServiceRequest' && JSON.stringify(r).includes('EN-'));

  test('positive controls: the coordinator sees everyone, a municipality its residents, through the same paths', async () => {
    expect((await g.call(`/Patient/${a}`, g.tokens.coordinator)).status).toBe(200);
    expect((await g.call(`/Patient/${a}`, g.tokens.muniB)).status).toBe(200);
    expect((await g.call(`/Patient/${b}`, g.tokens.muniA)).status).toBe(200);
    const batch = { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Patient/${b}` } }, { request: { method: 'GET', url: `CarePlan?patient=Patient/${b}` } }] };
    const res = await json(g.call('', g.tokens.muniA, { method: 'POST', body: JSON.stringify(batch) }));
    expect(res.entry!.map((e) => e.response!.status)).toEqual(['200 OK', '200 OK']);
    expect(((res.entry![1].resource as Bundle).entry ?? []).length).toBe(1);
  });

  test('Bundle GET entries pass the same rules as single reads and searches (batch and transaction)', async () => {
    for (const type of ['batch', 'transaction']) {
      const bundle = {
        resourceType: 'Bundle',
        type,
        entry: [
          { request: { method: 'GET', url: 'ServiceRequest?_count=100' } },
          { request: { method: 'GET', url: `CarePlan?patient=Patient/${a}` } },
          { request: { method: 'GET', url: `Patient?_id=${a}` } },
          { request: { method: 'GET', url: `/Patient?identifier=${NI}|${A}` } },
          ...(type === 'batch' ? [{ request: { method: 'GET', url: `Patient/${a}` } }, { request: { method: 'GET', url: `/Patient/${a}/` } }] : []),
        ],
      };
      const res = await g.call('', g.tokens.muniA, { method: 'POST', body: JSON.stringify(bundle) });
      const body = await res.text();
      expect([type, leaksA(body)]).toEqual([type, false]);
      expect(body).not.toContain('child protection');
      if (type === 'batch') {
        const statuses = (JSON.parse(body) as Bundle).entry!.map((e) => e.response!.status);
        expect(statuses.slice(4)).toEqual(['403', '403']);
      }
    }
    // a transaction that reads a hidden resource by id fails whole
    const tx = { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'GET', url: `Patient/${a}` } }] };
    const refused = await g.call('', g.tokens.muniA, { method: 'POST', body: JSON.stringify(tx) });
    expect(refused.status).toBe(403);
    expect(leaksA(await refused.text())).toBe(false);
    // the audit trail names whose data a batch showed: B's plan, for Tartu linn
    const mine = await json(g.call(`/AuditEvent?_count=200`, g.tokens.muniA));
    const bundles = (mine.entry ?? []).map((e) => e.resource as AuditEvent).filter((e) => e.subtype?.[0].code === 'transaction');
    expect(bundles.length).toBeGreaterThan(0);
  });

  test('writes through every door are checked: URL spellings, conditional forms, Bundles, $process-message', async () => {
    const before = await text(g.call(`/Patient/${a}`, g.tokens.coordinator));
    const patientA = JSON.parse(before) as Patient;
    const changed = { ...patientA, name: [{ family: 'Võõras', given: ['Walked'] }] };
    delete (changed as Partial<Patient>).meta;
    const sr = socialOfA()[0];
    const srIdentifier = sr.identifier![0];
    const attempts: [string, unknown][] = [
      ['transaction PUT /Patient/<id>', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: changed, request: { method: 'PUT', url: `/Patient/${a}` } }] }],
      ['batch PUT Patient/<id>/', { resourceType: 'Bundle', type: 'batch', entry: [{ resource: changed, request: { method: 'PUT', url: `Patient/${a}/` } }] }],
      ['batch PUT escaped id', { resourceType: 'Bundle', type: 'batch', entry: [{ resource: changed, request: { method: 'PUT', url: `Patient/${encodeURIComponent(a).replace(/-/g, '%2D')}` } }] }],
      ['transaction PUT Patient?identifier', { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: { ...changed, id: undefined }, request: { method: 'PUT', url: `Patient?identifier=${NI}|${A}` } }] }],
      ['batch DELETE ServiceRequest?identifier', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'DELETE', url: `ServiceRequest?identifier=${srIdentifier.system}|${srIdentifier.value}` } }] }],
      ['transaction DELETE Patient/<id>', { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `Patient/${a}` } }] }],
    ];
    for (const [what, body] of attempts) {
      const res = await g.call('', g.tokens.muniA, { method: 'POST', body: JSON.stringify(body) });
      const out = await res.text();
      const statuses = res.status === 200 ? (JSON.parse(out) as Bundle).entry!.map((e) => e.response!.status) : [String(res.status)];
      expect([what, statuses]).toEqual([what, ['403']]);
      expect([what, leaksA(out)]).toEqual([what, false]);
    }
    // $process-message carrying A's Patient
    const message = {
      resourceType: 'Bundle',
      type: 'message',
      entry: [
        { resource: { resourceType: 'MessageHeader', id: 'm-1', eventCoding: { system: 'https://care-gateway.ee/fhir/CodeSystem/message-event', code: 'patient-update' }, source: { endpoint: 'urn:x' } } },
        { resource: changed },
      ],
    };
    const pm = await text(g.call('/$process-message', g.tokens.muniA, { method: 'POST', body: JSON.stringify(message) }));
    expect(pm).toContain('"code":"fatal-error"');
    expect(pm).toMatch(/no care relationship|may not/);
    // single interactions: conditional update and delete, plain writes into a non-resident's record
    expect((await g.call(`/Patient?identifier=${NI}|${A}`, g.tokens.muniA, { method: 'PUT', body: JSON.stringify({ ...changed, id: undefined }) })).status).toBe(403);
    const condition = { resourceType: 'Condition', subject: { reference: `Patient/${a}` }, code: { text: 'invented' } };
    expect((await g.call('/Condition', g.tokens.muniA, { method: 'POST', body: JSON.stringify(condition) })).status).toBe(403);
    expect((await g.call(`/ServiceRequest/${sr.id}`, g.tokens.muniA, { method: 'DELETE' })).status).toBe(403);
    // nothing changed
    expect(await text(g.call(`/Patient/${a}`, g.tokens.coordinator))).toBe(before);
    expect((await g.call(`/ServiceRequest/${sr.id}`, g.tokens.coordinator)).status).toBe(200);
  });

  test('trusted membership: no caller grants itself access (team, GP, residence, registry code)', async () => {
    const team: CareTeam = { resourceType: 'CareTeam', status: 'active', subject: { reference: `Patient/${a}` }, participant: [{ member: { reference: 'Organization/ehak-0793' } }] };
    expect((await g.call('/CareTeam', g.tokens.muniA, { method: 'POST', body: JSON.stringify(team) })).status).toBe(403);
    expect((await g.call(`/Patient/${a}`, g.tokens.muniA)).status).toBe(403);
    // the GP sees B (its patient) — still may not add itself to B's team
    const teamB = (await json(g.call(`/CareTeam?subject=Patient/${b}`, g.tokens.coordinator))).entry![0].resource as CareTeam;
    const gpOrg = (await json(g.call(`/Organization?identifier=https://fhir.ee/sid/org/est/br|10856624`, g.tokens.coordinator))).entry?.[0]?.resource;
    if (gpOrg) {
      const withGp = { ...teamB, participant: [...(teamB.participant ?? []), { ...teamB.participant![0], member: { reference: `Organization/${gpOrg.id}` } }] };
      expect((await g.call(`/CareTeam/${teamB.id}`, g.tokens.gp, { method: 'PUT', body: JSON.stringify(withGp) })).status).toBe(403);
    }
    // Elva sees A and may correct A's address within Elva — but may not name itself A's GP
    const patientA = await json<Patient>(g.call(`/Patient/${a}`, g.tokens.muniB));
    const { meta: _m, ...plain } = patientA;
    expect((await g.call(`/Patient/${a}`, g.tokens.muniB, { method: 'PUT', body: JSON.stringify({ ...plain, telecom: [{ system: 'phone', value: '+3725550000' }] }) })).status).toBe(200);
    expect((await g.call(`/Patient/${a}`, g.tokens.muniB, { method: 'PUT', body: JSON.stringify({ ...plain, generalPractitioner: [{ reference: 'Organization/ehak-0171' }] }) })).status).toBe(403);
    // Tartu linn may not move A into Tartu (it does not see A), nor register a new person as its resident
    const moved = { ...plain, address: [{ city: 'Tartu', district: 'Tartu linn', extension: undefined }] };
    expect((await g.call(`/Patient/${a}`, g.tokens.muniA, { method: 'PUT', body: JSON.stringify(moved) })).status).toBe(403);
    const newcomer = { resourceType: 'Patient', identifier: [{ system: NI, value: ik('3900101000') }], address: [{ city: 'Tartu', district: 'Tartu linn' }] };
    expect((await g.call('/Patient', g.tokens.muniA, { method: 'POST', body: JSON.stringify(newcomer) })).status).toBe(403);
    // a GP may not register a new person naming itself GP; a new person with nothing granting access is fine
    if (gpOrg) {
      const gpPatient = { resourceType: 'Patient', identifier: [{ system: NI, value: ik('3900101001') }], generalPractitioner: [{ reference: `Organization/${gpOrg.id}` }] };
      expect((await g.call('/Patient', g.tokens.gp, { method: 'POST', body: JSON.stringify(gpPatient) })).status).toBe(403);
    }
    expect((await g.call('/Patient', g.tokens.gp, { method: 'POST', body: JSON.stringify({ resourceType: 'Patient', identifier: [{ system: NI, value: ik('3900101002') }] }) })).status).toBe(201);
    // claiming another organisation's resource by putting one's own registry code on it
    const elvaOrg = await json<Resource & { identifier?: unknown[] }>(g.call('/Organization/ehak-0171', g.tokens.coordinator));
    const claimed = { ...elvaOrg, identifier: [{ system: 'https://fhir.ee/sid/org/est/br', value: TARTU }] };
    delete (claimed as Partial<Resource>).meta;
    expect((await g.call('/Organization/ehak-0171', g.tokens.muniA, { method: 'PUT', body: JSON.stringify(claimed) })).status).toBe(403);
    const fresh = { resourceType: 'Organization', id: 'invented-org', identifier: [{ system: 'https://fhir.ee/sid/org/est/br', value: TARTU }], name: 'Tartu' };
    expect((await g.call('/Organization/invented-org', g.tokens.muniA, { method: 'PUT', body: JSON.stringify(fresh) })).status).toBe(403);
    // nothing of A reached Tartu linn
    expect((await g.call(`/Patient/${a}`, g.tokens.muniA)).status).toBe(403);
    expect((await g.call(`/Patient/${a}/$everything`, g.tokens.muniA)).status).toBe(403);
    // privacy decisions are the coordinator's
    const consent = { resourceType: 'Consent', status: 'active', scope: { coding: [{ code: 'patient-privacy' }] }, category: [{ text: 'x' }], patient: { reference: `Patient/${a}` } };
    expect((await g.call('/Consent', g.tokens.muniB, { method: 'POST', body: JSON.stringify(consent) })).status).toBe(403);
  });

  test('conditional create shows a hidden match as a stub, never its content (single and in a transaction)', async () => {
    const restricted = socialOfA().find((r) => JSON.stringify(r).includes('child protection'))!;
    const id = restricted.identifier![0];
    const probe = { resourceType: 'ServiceRequest', status: 'active', intent: 'order', subject: { reference: `Patient/${b}` }, code: { text: 'probe' } };
    const res = await g.call('/ServiceRequest', g.tokens.muniA, { method: 'POST', body: JSON.stringify(probe), headers: { 'If-None-Exist': `identifier=${id.system}|${id.value}` } });
    const body = await res.text();
    expect(res.status).toBe(200);
    expect(body).not.toContain('child protection');
    expect(body).not.toContain(A);
    expect(body).not.toContain(`Patient/${a}`);
    const tx = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: probe, request: { method: 'POST', url: 'ServiceRequest', ifNoneExist: `identifier=${id.system}|${id.value}` } }] };
    const txBody = await text(g.call('', g.tokens.muniA, { method: 'POST', body: JSON.stringify(tx) }));
    expect(txBody).not.toContain('child protection');
    expect(txBody).not.toContain(`Patient/${a}`);
  });

  test('$validate of a stored resource, reverse chains and audit records follow the caller', async () => {
    expect((await g.call(`/Patient/${a}/$validate`, g.tokens.muniA, { method: 'POST' })).status).toBe(403);
    expect((await g.call(`/Patient/${b}/$validate`, g.tokens.muniA, { method: 'POST' })).status).toBe(200);
    expect((await g.call(`/Patient?_has:Encounter:subject:status=finished`, g.tokens.muniA)).status).toBe(403);
    expect((await g.call(`/Patient?_has:Encounter:subject:status=finished`, g.tokens.coordinator)).status).toBe(200);
    // Tartu linn's audit search: its own events only
    const events = ((await json(g.call(`/AuditEvent?_count=500`, g.tokens.muniA))).entry ?? []).map((e) => e.resource as AuditEvent);
    expect(events.length).toBeGreaterThan(0);
    for (const e of events) expect(e.agent![0].who!.identifier?.value).toBe(TARTU);
    const all = ((await json(g.call(`/AuditEvent?_count=500`, g.tokens.coordinator))).entry ?? []).map((e) => e.resource as AuditEvent);
    expect(new Set(all.map((e) => e.agent![0].who!.identifier?.value ?? e.agent![0].who!.display)).size).toBeGreaterThan(2);
  });

  test('generated from the CapabilityStatement: no type, interaction or Bundle entry shows A to any kind of caller without a relationship', async () => {
    const cs = await json<CapabilityStatement>(g.call('/metadata'));
    const types = cs.rest![0].resource!.map((r) => r.type);
    expect(types.length).toBeGreaterThan(100);
    const leaks: string[] = [];
    // every kind of caller that has no care relationship with A: a municipality (Tartu linn), a hospital and a GP
    // practice that have never treated A
    const roles: [string, string][] = [
      ['municipality', g.tokens.muniA],
      ['hospital', sign(g.claims(registryCode('1122334'), 'hospital'))],
      ['gp', sign(g.claims(registryCode('2233445'), 'gp'))],
    ];
    // Every type that has a version stored is searched, listed and included from directly; a type with none can show
    // nothing of anyone that way (a search, its includes and a type's history all start from the type's own rows),
    // and the batch of every type below still asks each of them. (AuditEvents are the caller's own: they name what it
    // asked for, refused requests included.)
    const stored = new Set((await g.gw.store.db.query<{ t: string }>(`SELECT DISTINCT resource_type AS t FROM resource_version`)).map((r) => r.t));
    for (const r of everythingA) expect(stored).toContain(r.resourceType);
    const swept = types.filter((t) => t !== 'AuditEvent' && stored.has(t));
    expect(swept.length).toBeGreaterThan(10);
    for (const [role, token] of roles) {
      for (const type of swept) {
        for (const path of [`/${type}?_count=1000`, `/${type}/_history?_count=1000`, `/${type}?_include=*&_revinclude=*&_count=1000`]) {
          const res = await g.call(path, token);
          // (own AuditEvents reached by _revinclude name what this caller asked for: left out of the scan)
          const bundle = JSON.parse(await res.text()) as Bundle;
          bundle.entry = (bundle.entry ?? []).filter((e) => e.resource?.resourceType !== 'AuditEvent');
          const body = JSON.stringify(bundle);
          if (leaksA(body)) leaks.push(`${role} ${path}: ${[...new Set(((JSON.parse(body) as Bundle).entry ?? []).filter((e) => leaksA(JSON.stringify(e))).map((e) => `${e.resource?.resourceType}/${e.resource?.id}`))].join(' ')}`);
        }
      }
      const batch = { resourceType: 'Bundle', type: 'batch', entry: types.filter((t) => t !== 'AuditEvent').map((t) => ({ request: { method: 'GET', url: `${t}?_count=100` } })) };
      if (leaksA(await text(g.call('', token, { method: 'POST', body: JSON.stringify(batch) })))) leaks.push(`${role} batch of every type`);
      // every interaction on each of A's resources
      for (const r of everythingA.filter((x) => x.resourceType !== 'AuditEvent')) {
        const at = `/${r.resourceType}/${r.id}`;
        const { meta: _m, ...content } = r as Resource & { meta?: unknown };
        const probes: [string, string, RequestInit][] = [
          ['read', at, {}],
          ['vread', `${at}/_history/${r.meta!.versionId}`, {}],
          ['history', `${at}/_history`, {}],
          ['update', at, { method: 'PUT', body: JSON.stringify(content) }],
          ['update changed', at, { method: 'PUT', body: JSON.stringify({ ...content, language: 'et' }) }],
          ['delete', at, { method: 'DELETE' }],
          ['validate', `${at}/$validate`, { method: 'POST' }],
          ['batch GET', '', { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `${r.resourceType}/${r.id}` } }] }) }],
          ['batch PUT', '', { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ resource: { ...content, language: 'et' }, request: { method: 'PUT', url: `${r.resourceType}/${r.id}` } }] }) }],
          ['batch DELETE', '', { method: 'POST', body: JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'DELETE', url: `${r.resourceType}/${r.id}` } }] }) }],
        ];
        for (const [what, path, init] of probes) {
          const res = await g.call(path, token, init);
          const body = await res.text();
          // (a refused write may name the resource the caller itself named; a 2xx or A's data in the body is a leak)
          if ((res.status < 300 && !what.startsWith('batch')) || leaksA(body.replaceAll(`${r.resourceType}/${r.id}`, ''))) leaks.push(`${role} ${what} ${r.resourceType}/${r.id} → ${res.status}`);
        }
      }
    }
    expect(leaks).toEqual([]);
    // and nothing of A changed
    const after = ((await json(g.call(`/Patient/${a}/$everything?_count=1000`, g.tokens.coordinator))).entry ?? []).map((e) => `${e.resource!.resourceType}/${e.resource!.id}/${e.resource!.meta!.versionId}`);
    const before = everythingA.map((r) => `${r.resourceType}/${r.id}/${r.meta!.versionId}`);
    for (const v of before.filter((x) => !x.startsWith('Patient/'))) expect(after).toContain(v);
  });
});
