/**
 * FHIR ingest over HTTP on every backend: transaction Bundles (atomic, urn:uuid references, conditional create
 * race-safe, nothing left behind when the last entry fails), batch Bundles (entry by entry), refusals, FHIR
 * messaging ($process-message), and the scenario in which a hospital's FHIR discharge and a GP's FHIR referral
 * build the same shared plan an HL7 v2 discharge and referral build.
 *
 * Specifications: https://hl7.org/fhir/R4/http.html#transaction, https://hl7.org/fhir/R4/messaging.html
 */
import type { Bundle, BundleEntry, CarePlan, CareTeam, Encounter, MessageHeader, OperationOutcome, Patient, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { eeDischarge, gpReferral } from '../fixtures/hl7v2/messages.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const EHAK_EXT = 'https://fhir.ee/base/StructureDefinition/ee-ehak';
const FHIR_JSON = { 'Content-Type': 'application/fhir+json' };
/** what POST /fhir answers: a response Bundle, or an OperationOutcome */
type Answer = Omit<Bundle, 'resourceType'> & Omit<OperationOutcome, 'resourceType'> & { resourceType: string };

function patient(ik: string): Patient {
  return {
    resourceType: 'Patient',
    identifier: [{ system: NI, value: ik }],
    name: [{ family: 'Tamm', given: ['Jüri'] }],
    gender: 'male',
    birthDate: '1973-02-10',
    address: [{ use: 'home', city: 'Elva', country: 'EE', extension: [{ url: EHAK_EXT, valueCoding: { system: 'https://fhir.ee/sid/ehak', code: '0171' } }] }],
    generalPractitioner: [{ reference: 'urn:uuid:gp' }],
  };
}

/** A hospital's discharge as a transaction: Patient, GP, doctor, hospital, finished inpatient Encounter, a stroke, the daughter. */
function dischargeEntries(ik: string, visit: string): BundleEntry[] {
  const put = (r: Resource): BundleEntry => ({ fullUrl: `urn:uuid:${r.id}`, resource: r, request: { method: 'PUT', url: `${r.resourceType}/${r.id}` } });
  const encounter: Encounter = {
    resourceType: 'Encounter',
    id: `enc-${visit}`,
    identifier: [{ system: 'https://elvahaigla.ee/visit', value: visit }],
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    subject: { reference: 'urn:uuid:patient' },
    serviceProvider: { reference: 'Organization/org-elva-haigla' },
    period: { start: '2026-11-01T10:00:00+02:00', end: '2026-11-10T12:00:00+02:00' },
    participant: [{ type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'ATND' }] }], individual: { reference: 'Practitioner/dr-d99876' } }],
    hospitalization: { dischargeDisposition: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/discharge-disposition', code: 'home' }] } },
  };
  return [
    { fullUrl: 'urn:uuid:patient', resource: patient(ik), request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${NI}|${ik}` } },
    { fullUrl: 'urn:uuid:gp', resource: { resourceType: 'Practitioner', identifier: [{ system: 'https://fhir.ee/sid/pro/est/pho', value: 'D12345' }], name: [{ family: 'Perearst', given: ['Piret'] }] }, request: { method: 'POST', url: 'Practitioner', ifNoneExist: 'identifier=https://fhir.ee/sid/pro/est/pho|D12345' } },
    put({ resourceType: 'Practitioner', id: 'dr-d99876', name: [{ family: 'Arst', given: ['Andres'] }] }),
    put({ resourceType: 'Organization', id: 'org-elva-haigla', name: 'Elva Haigla', identifier: [{ system: 'https://fhir.ee/sid/org/est/br', value: '90006399' }] }),
    put(encounter),
    put({ resourceType: 'Condition', id: `cond-${visit}`, subject: { reference: 'urn:uuid:patient' }, encounter: { reference: `urn:uuid:enc-${visit}` }, code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I63.9' }] } }),
    put({ resourceType: 'RelatedPerson', id: `rp-${visit}`, patient: { reference: 'urn:uuid:patient' }, relationship: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'DAU' }] }], name: [{ family: 'Tamm', given: ['Kati'] }] }),
  ];
}

describe.each(backends())('FHIR ingest on %s', (_name, makeBackend) => {
  const suite = useGateway(makeBackend);
  let base: string;
  let url: string;
  beforeAll(() => ({ base, url } = suite));

  const postBase = async (body: unknown, path = ''): Promise<{ status: number; body: Answer }> => {
    const res = await fetch(`${base}${path}`, { method: 'POST', headers: FHIR_JSON, body: typeof body === 'string' ? body : JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as Answer };
  };
  const found = async <T>(q: string): Promise<T[]> => ((await (await fetch(`${base}/${q}`)).json() as Bundle).entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource as T);
  const transaction = (entry: BundleEntry[]) => postBase({ resourceType: 'Bundle', type: 'transaction', entry });

  async function planShape(ik: string) {
    const p = (await found<Patient>(`Patient?identifier=${NI}|${ik}`))[0];
    const plans = await found<CarePlan>(`CarePlan?patient=Patient/${p.id}`);
    expect(plans).toHaveLength(1);
    const team = (await (await fetch(`${base}/${plans[0].careTeam![0].reference}`)).json()) as CareTeam;
    const acts = await Promise.all(plans[0].activity!.map(async (a) => (await (await fetch(`${base}/${a.reference!.reference}`)).json()) as ServiceRequest));
    return {
      patient: p,
      plan: plans[0],
      team,
      codes: acts.map((a) => a.code?.coding?.[0]?.code ?? (a.category?.[0]?.coding?.[0]?.code ? 'referral' : '?')).sort(),
      roles: [...new Set(team.participant!.map((x) => x.role![0].coding![0].code))].sort(),
      addresses: plans[0].addresses?.length ?? 0,
    };
  }

  test('a transaction resolves urn:uuid references, gives the isikukood Patient its one id, and feeds the plan', async () => {
    const { status, body } = await transaction(dischargeEntries('37302102711', 'TX-1'));
    expect(status).toBe(200);
    expect(body.type).toBe('transaction-response');
    expect(body.entry!.map((e) => e.response!.status)).toEqual(['201 Created', '201 Created', '201 Created', '201 Created', '201 Created', '201 Created', '201 Created']);
    const patientLoc = body.entry![0].response!.location!;
    const enc = body.entry![4].resource as Encounter;
    expect(enc.subject!.reference).toBe(patientLoc.split('/_history')[0]);
    const p = body.entry![0].resource as Patient;
    expect(p.generalPractitioner![0].reference).toBe(body.entry![1].response!.location!.split('/_history')[0]);
    // the same Patient as HL7 v2 would write for this isikukood
    await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: gpReferral('37302102711', 'TX-REF-1') });
    expect(await found(`Patient?identifier=${NI}|37302102711`)).toHaveLength(1);
    const shape = await planShape('37302102711');
    expect(shape.codes).toEqual(expect.arrayContaining(['gp-follow-up-after-discharge', 'social-care-needs-assessment']));
    expect(shape.roles).toEqual(expect.arrayContaining(['446050000', '309343006', '133932002', 'municipality-of-residence']));
  });

  test('a transaction that fails in its last entry leaves nothing behind', async () => {
    const ik = '44501231007';
    const entries: BundleEntry[] = [
      ...dischargeEntries(ik, 'TX-FAIL'),
      { resource: { resourceType: 'Observation', code: { text: 'no status' }, subject: { reference: 'urn:uuid:patient' } } as Resource, request: { method: 'POST', url: 'Observation' } },
    ];
    const before = await found<unknown>('Encounter?_count=1000');
    const { status, body } = await transaction(entries);
    expect(status).toBe(422);
    expect(body.resourceType).toBe('OperationOutcome');
    expect(body.issue.some((i) => i.expression?.some((x) => x.startsWith('Bundle.entry[7].resource.status')))).toBe(true);
    expect(await found(`Patient?identifier=${NI}|${ik}`)).toHaveLength(0);
    expect(await found('Encounter?_count=1000')).toHaveLength(before.length);
    expect(await found(`Condition?_id=cond-TX-FAIL`)).toHaveLength(0);
    const hist = (await (await fetch(`${base}/Encounter/enc-TX-FAIL/_history`)).json()) as Bundle;
    expect(hist.entry ?? []).toHaveLength(0);
    // the bundle itself is kept in the inbox, rejected with the reason
    const log = (await (await fetch(`${url}/admin/messages?status=rejected`)).json()) as { entries?: { channel: string }[] } | { channel: string }[];
    expect(JSON.stringify(log)).toContain('"fhir"');
  });

  test('conditional create in parallel transactions makes one resource', async () => {
    const org = (n: number): BundleEntry[] => [
      { fullUrl: `urn:uuid:o${n}`, resource: { resourceType: 'Organization', name: 'Kambja Perearstikeskus', identifier: [{ system: 'https://fhir.ee/sid/org/est/br', value: '12345678' }] }, request: { method: 'POST', url: 'Organization', ifNoneExist: 'identifier=https://fhir.ee/sid/org/est/br|12345678' } },
    ];
    const results = await Promise.all(Array.from({ length: 6 }, (_, n) => transaction(org(n))));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(results.filter((r) => r.body.entry![0].response!.status === '201 Created')).toHaveLength(1);
    expect(await found('Organization?identifier=https://fhir.ee/sid/org/est/br|12345678')).toHaveLength(1);
  });

  test('conditional update as a single request: create on no match, update on one, 412 on several; concurrent ones make one', async () => {
    const put = (crit: string, body: unknown) => fetch(`${base}/Practitioner?${crit}`, { method: 'PUT', headers: FHIR_JSON, body: JSON.stringify(body) });
    const crit = 'identifier=https://example.ee/staff|S-1';
    const body = { resourceType: 'Practitioner', identifier: [{ system: 'https://example.ee/staff', value: 'S-1' }], name: [{ family: 'Saar' }] };
    const results = await Promise.all(Array.from({ length: 5 }, () => put(crit, body)));
    expect(results.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 201]);
    const updated = await put(crit, { ...body, name: [{ family: 'Saar-Kask' }] });
    expect(updated.status).toBe(200);
    expect(((await updated.json()) as { meta: { versionId: string } }).meta.versionId).toBe('2');
    expect(await found('Practitioner?identifier=https://example.ee/staff|S-1')).toHaveLength(1);
    await put('identifier=https://example.ee/staff|S-2', { ...body, identifier: [{ system: 'https://example.ee/staff', value: 'S-2' }] });
    const several = await put('identifier=https://example.ee/staff|S-1,https://example.ee/staff|S-2', body);
    expect(several.status).toBe(412);
  });

  test('a batch runs entry by entry: good entries land, bad ones get their own OperationOutcome', async () => {
    const { status, body } = await postBase({
      resourceType: 'Bundle',
      type: 'batch',
      entry: [
        { resource: { resourceType: 'Practitioner', name: [{ family: 'Kask' }] }, request: { method: 'POST', url: 'Practitioner' } },
        { resource: { resourceType: 'Observation', code: { text: 'x' } }, request: { method: 'POST', url: 'Observation' } },
        { request: { method: 'GET', url: 'Organization/org-elva-haigla' } },
        { request: { method: 'GET', url: 'Patient/does-not-exist' } },
      ],
    });
    expect(status).toBe(200);
    expect(body.type).toBe('batch-response');
    expect(body.entry!.map((e) => e.response!.status)).toEqual(['201 Created', '422', '200 OK', '404']);
    expect((body.entry![1].response!.outcome as OperationOutcome).issue[0].expression![0]).toMatch(/^Bundle\.entry\[1\]\.resource\.status/);
    expect((body.entry![2].resource as Resource).resourceType).toBe('Organization');
  });

  test('refusals: not JSON, not a Bundle, wrong Bundle type, bad entries, unresolved and missing references', async () => {
    expect((await postBase('{not json')).status).toBe(400);
    const notBundle = await postBase({ resourceType: 'Patient' });
    expect(notBundle.status).toBe(422);
    expect(notBundle.body.issue[0].expression).toEqual(['resourceType']);
    expect((await postBase({ resourceType: 'Bundle', type: 'collection', entry: [] })).body.issue[0].expression).toEqual(['Bundle.type']);
    const badEntries = await transaction([
      { resource: { resourceType: 'Patient' }, request: { method: 'PATCHY' as 'PUT', url: 'Patient/1' } },
      { resource: { resourceType: 'Patient' }, request: { method: 'PUT', url: 'Encounter/1' } },
      { request: { method: 'POST', url: 'Patient' } },
    ]);
    expect(badEntries.status).toBe(422);
    expect(badEntries.body.issue.map((i) => i.expression![0])).toEqual(['Bundle.entry[0].request.method', 'Bundle.entry[1].resource.resourceType', 'Bundle.entry[2].resource']);
    const dangling = await transaction([{ resource: { resourceType: 'Condition', subject: { reference: 'urn:uuid:nobody' }, code: { text: 'x' } } as Resource, request: { method: 'POST', url: 'Condition' } }]);
    expect(dangling.status).toBe(422);
    expect(dangling.body.issue[0].diagnostics).toMatch(/urn:uuid:nobody is not the fullUrl/);
    const missing = await transaction([{ resource: { resourceType: 'Condition', subject: { reference: 'Patient/nobody-here' }, code: { text: 'x' } } as Resource, request: { method: 'POST', url: 'Condition' } }]);
    expect(missing.status).toBe(422);
    expect(missing.body.issue[0]).toMatchObject({ code: 'not-found', expression: ['Bundle.entry[0].resource'] });
    expect(missing.body.issue[0].diagnostics).toMatch(/Patient\/nobody-here does not exist/);
    // single-resource writes too: nothing half-written points nowhere
    const single = await fetch(`${base}/Condition`, { method: 'POST', headers: FHIR_JSON, body: JSON.stringify({ resourceType: 'Condition', subject: { reference: 'Patient/nobody-here' }, code: { text: 'x' } }) });
    expect(single.status).toBe(422);
    expect(((await single.json()) as OperationOutcome).issue[0].diagnostics).toMatch(/Patient\/nobody-here does not exist/);
    const urn = await fetch(`${base}/Condition/c-urn`, { method: 'PUT', headers: FHIR_JSON, body: JSON.stringify({ resourceType: 'Condition', id: 'c-urn', subject: { reference: 'urn:uuid:x' }, code: { text: 'x' } }) });
    expect(urn.status).toBe(422);
  });

  test('$process-message: a discharge notification builds the plan; an unknown event and a non-message are refused', async () => {
    const ik = '61509031009';
    const header: MessageHeader = {
      resourceType: 'MessageHeader',
      id: 'msg-1',
      eventCoding: { system: 'https://care-gateway.ee/fhir/CodeSystem/message-event', code: 'discharge-notification' },
      source: { endpoint: 'https://his.elvahaigla.ee/fhir' },
    };
    const entries = dischargeEntries(ik, 'MSG-1').map(({ fullUrl, resource }) => ({ fullUrl, resource }));
    const message = { resourceType: 'Bundle', type: 'message', entry: [{ fullUrl: 'urn:uuid:msg-1', resource: header }, ...entries] };
    const ok = await postBase(message, '/$process-message');
    expect(ok.status).toBe(200);
    const resp = ok.body.entry![0].resource as MessageHeader;
    expect(resp.response).toMatchObject({ identifier: 'msg-1', code: 'ok' });
    const shape = await planShape(ik);
    expect(shape.codes).toEqual(expect.arrayContaining(['gp-follow-up-after-discharge', 'social-care-needs-assessment']));

    const unknown = await postBase({ ...message, entry: [{ resource: { ...header, id: 'msg-2', eventCoding: { code: 'weather-report' } } }] }, '/$process-message');
    expect(unknown.status).toBe(200);
    expect((unknown.body.entry![0].resource as MessageHeader).response).toMatchObject({ identifier: 'msg-2', code: 'fatal-error' });
    expect((unknown.body.entry![1].resource as OperationOutcome).issue[0].diagnostics).toMatch(/weather-report is not supported/);

    expect((await postBase({ resourceType: 'Bundle', type: 'transaction' }, '/$process-message')).status).toBe(422);
  });

  test('FHIR discharge + FHIR referral build the same plan shape as HL7 v2 ADT^A03 + REF^I12; replay changes nothing', async () => {
    // HL7 v2 for one person
    const hl7 = async (m: string) => expect(await (await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: m })).text()).toContain('MSA|AA');
    await hl7(eeDischarge({ controlId: 'SH-A03', isikukood: '33807121008', visit: 'V-SH' }));
    await hl7(gpReferral('33807121008', 'SH-REF'));
    const fromHl7 = await planShape('33807121008');

    // FHIR for another
    const ik = '45203141000';
    await transaction(dischargeEntries(ik, 'FH-1'));
    const p = (await found<Patient>(`Patient?identifier=${NI}|${ik}`))[0];
    const referral: BundleEntry[] = [
      { fullUrl: 'urn:uuid:elva', resource: { resourceType: 'Organization', name: 'Elva Vallavalitsus', identifier: [{ system: 'https://fhir.ee/sid/org/est/br', value: '75008427' }] }, request: { method: 'POST', url: 'Organization', ifNoneExist: 'identifier=https://fhir.ee/sid/org/est/br|75008427' } },
      {
        resource: {
          resourceType: 'ServiceRequest',
          identifier: [{ system: 'https://perearst.ee/referral', value: 'GP-REF-FH' }],
          status: 'active',
          intent: 'order',
          category: [{ coding: [{ system: 'http://snomed.info/sct', code: '3457005', display: 'Patient referral' }] }],
          code: { coding: [{ code: 'HOMECARE' }], text: 'Home care need assessment' },
          subject: { reference: `Patient/${p.id}` },
          authoredOn: '2026-11-12',
          requester: { reference: p.generalPractitioner![0].reference },
          performer: [{ reference: 'urn:uuid:elva' }],
        } as ServiceRequest,
        request: { method: 'POST', url: 'ServiceRequest', ifNoneExist: 'identifier=https://perearst.ee/referral|GP-REF-FH' },
      },
    ];
    expect((await transaction(referral)).status).toBe(200);
    const fromFhir = await planShape(ik);
    expect(fromFhir.roles).toEqual(fromHl7.roles);
    expect(fromFhir.codes.filter((c) => c !== '?' && c !== 'referral')).toEqual(fromHl7.codes.filter((c) => c !== '?' && c !== 'referral'));
    expect(fromFhir.codes).toHaveLength(fromHl7.codes.length);
    expect(fromFhir.addresses).toBe(fromHl7.addresses);

    // replaying both FHIR submissions writes nothing
    await transaction(dischargeEntries(ik, 'FH-1'));
    await transaction(referral);
    const again = await planShape(ik);
    expect(again.plan.meta!.versionId).toBe(fromFhir.plan.meta!.versionId);
    expect(again.team.meta!.versionId).toBe(fromFhir.team.meta!.versionId);
  });
});
