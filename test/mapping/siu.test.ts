/**
 * SIU^S12–S15 → Appointment: a GP follow-up booked by the hospital becomes an activity of the shared plan, with the
 * patient, the practitioner (AIP) and the place (AIL) as participants; a cancellation (S15) cancels it, the same
 * Appointment. Over POST /hl7v2 into a gateway, and the conversion alone.
 */
import type { Appointment, Bundle, CarePlan, Location, Practitioner } from '@medplum/fhirtypes';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { convertHl7 } from '../../src/mapping/hl7v2/convert.js';
import { deterministicId, SYSTEMS } from '../../src/fhir/identifiers.js';
import { followUp } from '../fixtures/hl7v2/messages.js';
import { checkResource } from '../../src/write-checks.js';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';

const isikukood = '45203150228';
const siu = (trigger: 'S12' | 'S15', control: string) => followUp(trigger, control, isikukood);

test('the conversion: one Appointment with its times, reason, comment and participants, valid FHIR R4', () => {
  const c = convertHl7(parseHl7(siu('S12', 'SIU-1')));
  const appt = c.resources.find((r): r is Appointment => r.resourceType === 'Appointment')!;
  expect(appt).toMatchObject({
    status: 'booked',
    start: '2026-12-15T10:00:00+02:00',
    end: '2026-12-15T10:20:00+02:00',
    comment: 'Kaasa võtta ravimite nimekiri',
    reasonCode: [{ coding: [{ code: 'KONTROLL' }] }],
    serviceType: [{ coding: [{ code: 'FOLLOW' }] }],
  });
  const actors = appt.participant.map((p) => p.actor?.reference);
  const gp = c.resources.find((r): r is Practitioner => r.resourceType === 'Practitioner' && r.identifier?.[0].value === 'D12345')!;
  const room = c.resources.find((r): r is Location => r.resourceType === 'Location')!;
  expect(actors.sort()).toEqual([`Patient/${c.patient.id}`, `Practitioner/${gp.id}`, `Location/${room.id}`].sort()); // references to other resources are set last
  expect(room.name).toBe('PEREARST');
  for (const r of [c.patient, ...c.resources]) expect([r.resourceType, checkResource(r, [])]).toEqual([r.resourceType, []]);
  expect(c.unused).not.toEqual(expect.arrayContaining(['SCH', 'AIP', 'AIL', 'AIS']));
});

test('S15 cancels the same Appointment', () => {
  const booked = convertHl7(parseHl7(siu('S12', 'SIU-1'))).resources.find((r) => r.resourceType === 'Appointment')!;
  const cancelled = convertHl7(parseHl7(siu('S15', 'SIU-2'))).resources.find((r): r is Appointment => r.resourceType === 'Appointment')!;
  expect(cancelled.id).toBe(booked.id);
  expect(cancelled.status).toBe('cancelled');
});

describe.each(backends())('SIU through the gateway on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const post = async (m: string) => (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: m })).text();

  test('a booked follow-up is an activity of the shared plan; its cancellation is seen there', async () => {
    expect(await post(siu('S12', 'SIU-10'))).toContain('MSA|AA');
    const p = deterministicId('Patient', SYSTEMS.isikukood, isikukood);
    const plan = ((await (await fetch(`${ctx.base}/CarePlan?subject=Patient/${p}&_include=CarePlan:activity-reference`)).json()) as Bundle).entry!;
    const appt = plan.find((e) => e.resource?.resourceType === 'Appointment')?.resource as Appointment;
    expect(appt.status).toBe('booked');
    expect((plan.find((e) => e.resource?.resourceType === 'CarePlan')!.resource as CarePlan).activity?.map((a) => a.reference?.reference)).toContain(`Appointment/${appt.id}`);
    expect(await post(siu('S15', 'SIU-11'))).toContain('MSA|AA');
    expect(((await (await fetch(`${ctx.base}/Appointment/${appt.id}`)).json()) as Appointment).status).toBe('cancelled');
  });
});

test('a booking without both its times: the duration (SCH-9/10) gives the end, AIS-4 the start; with no start it is proposed (app-2, app-3)', () => {
  const appt = (tq1: string, ais = 'AIS|1|A|FOLLOW^Järelkontroll^L|20261215100000') => {
    const text = followUp('S12', 'SIU-3', isikukood).replace('TQ1|||||||20261215100000|20261215102000', tq1).replace('AIS|1|A|FOLLOW^Järelkontroll^L|20261215100000', ais).replace('\r\r', '\r');
    return convertHl7(parseHl7(text)).resources.find((r): r is Appointment => r.resourceType === 'Appointment')!;
  };
  const booked = { status: 'booked', start: '2026-12-15T10:00:00+02:00', end: '2026-12-15T10:20:00+02:00', minutesDuration: 20 };
  expect(appt('TQ1|||||||20261215100000')).toMatchObject(booked);
  expect(appt('')).toMatchObject(booked); // the start from AIS-4
  for (const tq1 of ['TQ1|||||||', '']) expect([tq1, appt(tq1, 'AIS|1|A|FOLLOW^Järelkontroll^L').status, appt(tq1, 'AIS|1|A|FOLLOW^Järelkontroll^L').start]).toEqual([tq1, 'proposed', undefined]);
  // an end before the start: the times are left out, with a warning, and the booking is only proposed
  const reversed = convertHl7(parseHl7(followUp('S12', 'SIU-4', isikukood).replace('20261215100000|20261215102000', '20261215100000|20261215090000')));
  expect(reversed.resources.find((r): r is Appointment => r.resourceType === 'Appointment')).toMatchObject({ status: 'proposed' });
  expect(reversed.issues.some((i) => i.severity === 'warning' && /ends .* before it starts/.test(i.diagnostics ?? ''))).toBe(true);
  for (const a of [appt('TQ1|||||||20261215100000'), appt(''), appt('', 'AIS|1|A|FOLLOW^Järelkontroll^L')]) expect(checkResource(a, [])).toEqual([]);
});

test('SCH-20 (entered by) is a participant of type enterer (IG SCH[Appointment])', () => {
  const text = siu('S12', 'SIU-5').replace(/^SCH\|[^\r]*/m, (sch) => {
    const f = sch.split('|');
    while (f.length <= 20) f.push('');
    f[20] = 'N55555^Registraator^Reet';
    return f.join('|');
  });
  const c = convertHl7(parseHl7(text));
  const appt = c.resources.find((r): r is Appointment => r.resourceType === 'Appointment')!;
  const enterer = appt.participant.find((p) => p.type?.[0].coding?.[0].code === 'enterer')!;
  expect(enterer.type?.[0].coding?.[0].system).toBe('http://terminology.hl7.org/CodeSystem/provenance-participant-type');
  const who = c.resources.find((r): r is Practitioner => r.resourceType === 'Practitioner' && `Practitioner/${r.id}` === enterer.actor?.reference)!;
  expect(who.name?.[0]).toMatchObject({ family: 'Registraator', given: ['Reet'] });
  expect(checkResource(appt, [])).toEqual([]);
});
