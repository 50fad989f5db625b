/**
 * HL7 v2 end to end through a running gateway, on every backend: POST /hl7v2 and MLLP into the inbox, the ACK
 * rules, retransmissions, an invalid isikukood (AE with ERR), and the discharge notice reaching the shared plan.
 */
import type { Bundle, CarePlan, CareTeam, Encounter, Patient, Provenance, ServiceRequest, Task } from '@medplum/fhirtypes';
import type { Gateway } from '../../../src/app.js';
import { connectMllp } from '../../../src/mllp/client.js';
import { parseHl7 } from '../../../src/hl7v2/parse.js';
import { value, segmentsNamed } from '../../../src/hl7v2/message.js';
import { patientIdFor } from '../../../src/mapping/hl7v2/ids.js';
import { planIdFor } from '../../../src/careplan/assemble.js';
import { SYSTEMS, isikukoodCheckDigit } from '../../../src/fhir/identifiers.js';
import { backends, type Backend } from '../../helpers/backends.js';
import { startTestGateway } from '../../helpers/gateway.js';
import { eeDischarge, eeMerge, gpReferral } from '../../fixtures/hl7v2/messages.js';

describe.each(backends())('HL7 v2 through the gateway on %s', (_name, makeBackend) => {
  let backend: Backend;
  let gw: Gateway;
  let base: string;
  let url: string;
  let mllpPort: number;

  beforeAll(async () => {
    backend = makeBackend();
    await backend.prepare();
    ({ gw, base, url, mllpPort } = await startTestGateway(backend));
  });
  afterAll(async () => {
    await gw.close();
    await backend.cleanup();
  });

  const post = async (message: string) => {
    const res = await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'x-application/hl7-v2+er7' }, body: message });
    const ack = parseHl7(await res.text());
    return { status: res.status, ack, msa: segmentsNamed(ack, 'MSA')[0], errs: segmentsNamed(ack, 'ERR'), inbox: res.headers.get('x-inbox-id') };
  };
  const get = async <T>(path: string): Promise<T> => (await (await fetch(`${base}${path}`)).json()) as T;

  test('a discharge notice is acknowledged AA and lands in the shared plan with Provenance', async () => {
    const r = await post(eeDischarge({ controlId: 'E2E-1', isikukood: '37302102711' }));
    expect(r.status).toBe(200);
    expect(value(r.msa, 1)).toBe('AA');
    expect(value(r.msa, 2)).toBe('E2E-1');
    const pid = patientIdFor(SYSTEMS.isikukood, '37302102711');

    const patient = await get<Patient>(`/Patient/${pid}`);
    expect(patient.name?.[0]).toMatchObject({ family: 'Tamm', given: ['Jüri', 'Õie'] });
    expect(patient.birthDate).toBe('1973-02-10');
    expect(patient.address?.[0].extension?.[0].valueCoding?.code).toBe('0171');

    const plans = await get<Bundle>(`/CarePlan?patient=Patient/${pid}&_include=CarePlan:care-team&_revinclude=Provenance:target`);
    const plan = plans.entry!.find((e) => e.resource?.resourceType === 'CarePlan')!.resource as CarePlan;
    expect(plan.id).toBe(planIdFor(pid));
    expect(plans.entry!.filter((e) => e.resource?.resourceType === 'CarePlan')).toHaveLength(1);
    const team = plans.entry!.find((e) => e.resource?.resourceType === 'CareTeam')!.resource as unknown as CareTeam;
    const roles = team.participant!.map((p) => p.role?.[0].coding?.[0].code);
    expect(roles).toEqual(expect.arrayContaining(['116154003', '446050000', 'municipality-of-residence', '133932002', '309343006']));
    const prov = plans.entry!.find((e) => e.resource?.resourceType === 'Provenance')!.resource as unknown as Provenance;
    expect(prov.entity?.[0].what.identifier?.value).toBe(r.inbox);

    const activities = await Promise.all(plan.activity!.map((a) => get<ServiceRequest>(`/${a.reference!.reference}`)));
    expect(activities.map((a) => a.code?.coding?.[0].code).sort()).toEqual(['gp-follow-up-after-discharge', 'social-care-needs-assessment']);
    const enc = (await get<Bundle<Encounter>>(`/Encounter?patient=Patient/${pid}`)).entry![0].resource!;
    expect(enc).toMatchObject({ status: 'finished', period: { end: '2026-11-10T12:00:00+02:00' } });
    expect(enc.hospitalization?.dischargeDisposition?.coding?.[0].code).toBe('home');
  });

  test('a retransmission gets the stored ACK again and changes nothing', async () => {
    const first = await post(eeDischarge({ controlId: 'E2E-2', isikukood: '36805280109' }));
    const pid = patientIdFor(SYSTEMS.isikukood, '36805280109');
    const before = await get<CarePlan>(`/CarePlan/${planIdFor(pid)}`);
    const again = await post(eeDischarge({ controlId: 'E2E-2', isikukood: '36805280109' }));
    expect(value(again.msa, 1)).toBe('AA');
    expect(again.ack.controlId).toBe(first.ack.controlId); // the very same ACK
    expect((await get<CarePlan>(`/CarePlan/${planIdFor(pid)}`)).meta?.versionId).toBe(before.meta?.versionId);
  });

  test('the same control id with other content is refused with AR and ERR 205, and kept', async () => {
    const r = await post(eeDischarge({ controlId: 'E2E-2', isikukood: '36805280109', visit: 'V-OTHER' }));
    expect(r.status).toBe(409);
    expect(value(r.msa, 1)).toBe('AR');
    expect(value(r.errs[0], 3)).toBe('205');
    const entry = (await (await fetch(`${url}/admin/messages/${r.inbox}`)).json()) as { status: string; duplicateOf: string };
    expect(entry.status).toBe('rejected');
    expect(entry.duplicateOf).toBeTruthy();
  });

  test('an isikukood whose checksum fails gets AE with the location PID^1^3^1, and nothing is written', async () => {
    const r = await post(eeDischarge({ controlId: 'E2E-3', isikukood: '36805280108' }));
    expect(r.status).toBe(422);
    expect(value(r.msa, 1)).toBe('AE');
    expect([value(r.errs[0], 2, 1), value(r.errs[0], 2, 3), value(r.errs[0], 2, 4)]).toEqual(['PID', '3', '1']);
    expect(value(r.errs[0], 8)).toMatch(/check digit/);
    expect((await fetch(`${base}/Patient/${patientIdFor(SYSTEMS.isikukood, '36805280108')}`)).status).toBe(404);
    const log = (await (await fetch(`${url}/admin/messages?status=rejected`)).json()) as { entries: { id: string }[] };
    expect(log.entries.map((e) => e.id)).toContain(r.inbox);
  });

  test('an unsupported message type gets AR', async () => {
    const r = await post('MSH|^~\\&|A|B|C|D|20261110||ORM^O01^ORM_O01|E2E-4|P|2.5\rORC|NW|1');
    expect(value(r.msa, 1)).toBe('AR');
    expect(value(r.errs[0], 3)).toBe('200');
  });

  test('garbage is stored and refused with AR', async () => {
    const res = await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'hello' });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('MSA|AR');
  });

  test('over MLLP: Estonian letters in windows-1257 with MSH-18 arrive intact, ACK in order', async () => {
    const iconv = (await import('iconv-lite')).default;
    const c = await connectMllp('127.0.0.1', mllpPort);
    const text = eeDischarge({ controlId: 'E2E-5', isikukood: '38001010015', charset: 'WINDOWS-1257', trigger: 'A08' }).replace('Tamm^Jüri^Õie', 'Šõmer^Žanna');
    const ack = await c.send(iconv.encode(text, 'windows-1257'));
    expect(value(parseHl7(iconv.decode(ack, 'windows-1257')).segments[1], 1)).toBe('AA');
    await c.close();
    const p = await get<Patient>(`/Patient/${patientIdFor(SYSTEMS.isikukood, '38001010015')}`);
    expect(p.name?.[0]).toMatchObject({ family: 'Šõmer', given: ['Žanna'] });
  });

  test('many MLLP connections at once: messages share transactions, yet each gets its own ACK and every person one plan', async () => {
    // 12 connections × 4 messages for 6 people: a person's visits arrive on different connections at the same time
    const people = Array.from({ length: 6 }, (_, n) => {
      const ten = `3850505${String(200 + n).padStart(3, '0')}`;
      return ten + isikukoodCheckDigit(ten);
    });
    const sent: { controlId: string; ik: string; visit: string }[][] = Array.from({ length: 12 }, (_, c) =>
      Array.from({ length: 4 }, (_, k) => ({ controlId: `CONC-${c}-${k}`, ik: people[(c + k) % people.length], visit: `VC-${c}-${k}` })),
    );
    const bad = { controlId: 'CONC-BAD', ik: '38505052001', visit: 'VC-BAD' }; // checksum fails: AE, alone
    sent[5].splice(2, 0, bad);
    const acks = await Promise.all(
      sent.map(async (list) => {
        const c = await connectMllp('127.0.0.1', mllpPort);
        const out: { controlId: string; code: string }[] = [];
        for (const m of list) {
          const ack = parseHl7((await c.send(eeDischarge({ controlId: m.controlId, isikukood: m.ik, visit: m.visit }))).toString('utf8'));
          const msa = segmentsNamed(ack, 'MSA')[0];
          out.push({ controlId: value(msa, 2), code: value(msa, 1) });
        }
        await c.close();
        return out;
      }),
    );
    // each ACK answers its own message (MSA-2), in order, on its own connection
    acks.forEach((list, c) => expect(list.map((a) => a.controlId)).toEqual(sent[c].map((m) => m.controlId)));
    const codes = acks.flat();
    expect(codes.filter((a) => a.code === 'AA')).toHaveLength(48);
    expect(codes.find((a) => a.controlId === 'CONC-BAD')?.code).toBe('AE');
    for (const ik of people) {
      const pid = patientIdFor(SYSTEMS.isikukood, ik);
      const plans = await get<Bundle>(`/CarePlan?patient=Patient/${pid}`);
      expect(plans.entry ?? []).toHaveLength(1);
      const visits = sent.flat().filter((m) => m.ik === ik).length;
      const encounters = await get<Bundle>(`/Encounter?patient=Patient/${pid}&_count=100`);
      expect(encounters.entry ?? []).toHaveLength(visits);
    }
    const nobody = await get<Bundle>(`/Patient?identifier=${SYSTEMS.isikukood}|38505052001`);
    expect(nobody.entry ?? []).toHaveLength(0);
  });

  test('enhanced mode (MSH-15 AL, MSH-16 NE) gets a commit accept CA once the message is stored', async () => {
    const c = await connectMllp('127.0.0.1', mllpPort);
    const text = eeDischarge({ controlId: 'E2E-CA', isikukood: '38001010015', trigger: 'A08' }).replace('|P|2.5.1||||||', '|P|2.5.1|||AL|NE||');
    const ack = parseHl7((await c.send(text)).toString('utf8'));
    expect([value(ack.segments[1], 1), value(ack.segments[1], 2)]).toEqual(['CA', 'E2E-CA']);
    await c.close();
  });

  test('A13 after A03 revokes what the discharge added; the encounter is in progress again (history kept)', async () => {
    await post(eeDischarge({ controlId: 'E2E-6', isikukood: '37302100490', visit: 'V-13' }));
    const pid = patientIdFor(SYSTEMS.isikukood, '37302100490');
    expect((await get<CarePlan>(`/CarePlan/${planIdFor(pid)}`)).activity).toHaveLength(2);
    const r = await post(eeDischarge({ controlId: 'E2E-7', isikukood: '37302100490', visit: 'V-13', trigger: 'A13' }));
    expect(value(r.msa, 1)).toBe('AA');
    const plan = await get<CarePlan>(`/CarePlan/${planIdFor(pid)}`);
    expect(plan.activity).toBeUndefined();
    const enc = (await get<Bundle<Encounter>>(`/Encounter?patient=Patient/${pid}`)).entry![0].resource!;
    expect(enc.status).toBe('in-progress');
    expect(enc.period?.end).toBeUndefined();
    const history = await get<Bundle>(`/Encounter/${enc.id}/_history`);
    expect(history.entry!.length).toBeGreaterThanOrEqual(2);
    const tasks = await get<Bundle<Task>>(`/Task?patient=Patient/${pid}`);
    expect(tasks.entry!.map((e) => e.resource!.status)).toEqual(['cancelled']);
  });

  test('events apply by event time: an older A08 arriving late does not overwrite a newer address', async () => {
    const ik = '36805280109';
    const pid = patientIdFor(SYSTEMS.isikukood, ik);
    await post(eeDischarge({ controlId: 'E2E-T2', isikukood: ik, trigger: 'A08', ehak: '0793', eventTime: '20261120090000' }));
    const late = await post(eeDischarge({ controlId: 'E2E-T1', isikukood: ik, trigger: 'A08', ehak: '0171', eventTime: '20261115090000' }));
    expect(value(late.msa, 1)).toBe('AA'); // accepted and kept, but it does not undo the newer state
    const p = await get<Patient>(`/Patient/${pid}`);
    expect(p.address?.[0].extension?.[0].valueCoding?.code).toBe('0793');
    const newer = await post(eeDischarge({ controlId: 'E2E-T3', isikukood: ik, trigger: 'A08', ehak: '0171', eventTime: '20261125090000' }));
    expect(value(newer.msa, 1)).toBe('AA');
    expect((await get<Patient>(`/Patient/${pid}`)).address?.[0].extension?.[0].valueCoding?.code).toBe('0171');
  });

  test('a GP referral (REF^I12) joins the same plan as a ServiceRequest with a Task', async () => {
    const r = await post(gpReferral('37302102711', 'REF-E2E-1'));
    expect(value(r.msa, 1)).toBe('AA');
    const pid = patientIdFor(SYSTEMS.isikukood, '37302102711');
    const plan = await get<CarePlan>(`/CarePlan/${planIdFor(pid)}`);
    const refs = plan.activity!.map((a) => a.reference!.reference!);
    const srs = await Promise.all(refs.map((x) => get<ServiceRequest>(`/${x}`)));
    const referral = srs.find((s) => s.code?.coding?.[0].code === 'HOMECARE');
    expect(referral).toBeDefined();
    expect(referral!.requester?.reference).toBe(srs.find((s) => s.code?.coding?.[0].code === 'gp-follow-up-after-discharge')!.performer![0].reference);
    const task = (await get<Bundle<Task>>(`/Task?focus=ServiceRequest/${referral!.id}`)).entry![0].resource!;
    expect(task.owner).toEqual({ reference: 'Organization/ehak-0171', display: 'Elva Vallavalitsus sotsiaalosakond' }); // the municipality's own Organization: its worklist
  });

  test('A40 merges: one active plan on the surviving patient, the other patient replaced-by it', async () => {
    await post(eeDischarge({ controlId: 'E2E-8', isikukood: '36805280109', visit: 'V-S' }));
    await post(eeDischarge({ controlId: 'E2E-9', isikukood: '38001010015', visit: 'V-R' }));
    const r = await post(eeMerge('36805280109', '38001010015', 'E2E-10'));
    expect(value(r.msa, 1)).toBe('AA');
    const survivor = patientIdFor(SYSTEMS.isikukood, '36805280109');
    const retired = patientIdFor(SYSTEMS.isikukood, '38001010015');
    const plans = await get<Bundle<CarePlan>>(`/CarePlan?patient=Patient/${survivor}&status=active`);
    expect(plans.entry).toHaveLength(1);
    const old = await get<Patient>(`/Patient/${retired}`);
    expect(old.active).toBe(false);
    expect(old.link?.[0]).toMatchObject({ type: 'replaced-by', other: { reference: `Patient/${survivor}` } });
  });

  test('the message log lists entries without patient data, shows one, and reprocesses it', async () => {
    const r = await post(eeDischarge({ controlId: 'E2E-11', isikukood: '37302102711' }));
    const list = await (await fetch(`${url}/admin/messages?status=processed`)).text();
    expect(list).not.toContain('Tamm');
    const one = (await (await fetch(`${url}/admin/messages/${r.inbox}`)).json()) as { payload: { text: string }; produced: string[] };
    expect(one.payload.text).toContain('PID|1||37302102711');
    const again = await fetch(`${url}/admin/messages/${r.inbox}/$reprocess`, { method: 'POST' });
    expect(again.status).toBe(200);
    expect(((await again.json()) as { status: string }).status).toBe('processed');
  });
});
