/**
 * An Estonian discharge (ADT^A03, test/fixtures/hl7v2/messages.ts eeDischarge) through parse → convert.
 * Expected values are read from the message text, field by field (V2-to-FHIR IG segment maps PID, PD1, NK1, PV1,
 * DG1; Event[EncounterStatus]: A03 finished, A11 cancelled, A13 in-progress).
 */
import type { Condition, Encounter, Organization, Practitioner, RelatedPerson } from '@medplum/fhirtypes';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { convertHl7, type Conversion } from '../../src/mapping/hl7v2/convert.js';
import { deterministicId, SYSTEMS } from '../../src/fhir/identifiers.js';
import { CATEGORIES } from '../../src/fhir/outcome.js';
import { checkResource } from '../../src/write-checks.js';
import { eeDischarge, type DischargeOptions } from '../fixtures/hl7v2/messages.js';

const convert = (o: DischargeOptions = {}): Conversion => convertHl7(parseHl7(eeDischarge(o)));
const one = <T>(c: Conversion, type: string): T => c.resources.find((r) => r.resourceType === type) as T;

describe('ADT^A03 discharge from Elva hospital', () => {
  const c = convert();
  const enc = one<Encounter>(c, 'Encounter');

  test('Patient: isikukood and hospital number, name, birth date, sex, EHAK address', () => {
    // PID-3 rep 1: 37302102711^^^EE^NI → the isikukood system; rep 2: H-123456^^^ELVA_HAIGLA^MR → prn/{registry code}
    expect(c.patient.identifier?.map((i) => [i.system, i.value])).toEqual([
      [SYSTEMS.isikukood, '37302102711'],
      ['https://fhir.ee/sid/pid/est/prn/90006399', 'H-123456'], // ELVA_HAIGLA → 90006399 in mappings/facilities.yaml
    ]);
    expect(c.patient.id).toBe(deterministicId('Patient', SYSTEMS.isikukood, '37302102711'));
    expect(c.patientId).toBe(c.patient.id);
    expect(c.patient.name?.[0]).toMatchObject({ family: 'Tamm', given: ['Jüri', 'Õie'] }); // PID-5
    expect(c.patient.birthDate).toBe('1973-02-10'); // PID-7 19730210
    expect(c.patient.gender).toBe('male'); // PID-8 M
    expect(c.patient.address?.[0]).toMatchObject({ use: 'home', line: ['Kesk 1'], city: 'Elva', state: 'Tartumaa', postalCode: '61507', country: 'EE' });
    expect(c.patient.address?.[0].extension?.[0].valueCoding).toEqual({ system: SYSTEMS.ehak, code: '0171' }); // XAD-9
  });

  test('PD1-4 family doctor and PD1-3 practice → generalPractitioner', () => {
    const gp = c.resources.filter((r): r is Practitioner => r.resourceType === 'Practitioner').find((p) => p.identifier?.[0].value === 'D12345')!;
    expect(gp.identifier?.[0].system).toBe(SYSTEMS.professional); // TAM code → pho
    expect(gp.name?.[0]).toMatchObject({ family: 'Perearst', given: ['Piret'] });
    const refs = c.patient.generalPractitioner?.map((g) => g.reference);
    expect(refs).toContain(`Practitioner/${gp.id}`);
    const practice = c.resources.find((r): r is Organization => r.resourceType === 'Organization' && r.identifier?.[0].value === '10856624')!;
    expect(practice.identifier?.[0].system).toBe(SYSTEMS.organisation);
    expect(refs).toContain(`Organization/${practice.id}`);
  });

  test('NK1 daughter and caregiver → RelatedPerson with v3 RoleCode and the v2 contact role', () => {
    const rp = one<RelatedPerson>(c, 'RelatedPerson');
    expect(rp.patient.reference).toBe(`Patient/${c.patient.id}`);
    expect(rp.name?.[0]).toMatchObject({ family: 'Tamm', given: ['Kati'] }); // NK1-2
    expect(rp.relationship?.[0].coding?.[0]).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'DAUC' }); // NK1-3 DAU
    expect(rp.relationship?.[1].coding?.[0]).toMatchObject({ code: 'CGV' }); // NK1-7 caregiver
    expect(rp.telecom?.[0].value).toBe('+3725559876'); // NK1-5
  });

  test('an NK1 employer row → Patient.contact (relationship, name, phone, organisation), not a RelatedPerson', () => {
    const employer = 'NK1|2|Kask^Mari|EMR^Employer^HL70063|Ringtee 5^^Tartu^^50105^EE|^WPN^PH^^^^^^^^^+3727300000||E^Employer^HL70131|20200101|||||Tartu Bussijaam AS^^10000001'; // NK1-13 organisation
    const text = eeDischarge().replace(/(NK1\|1\|[^\r]*)/, `$1\r${employer}`);
    const withEmployer = convertHl7(parseHl7(text));
    expect(withEmployer.resources.filter((r) => r.resourceType === 'RelatedPerson')).toHaveLength(1); // the daughter only
    expect(withEmployer.patient.contact).toEqual([
      {
        relationship: [
          {
            coding: [
              { system: 'http://terminology.hl7.org/CodeSystem/v2-0131', code: 'E', display: 'Employer' }, // 0063 EMR → 0131 E
              { system: 'http://terminology.hl7.org/CodeSystem/v2-0063', code: 'EMR', display: 'Employer' }, // the code as sent
            ],
            text: 'Employer',
          },
          { coding: [expect.objectContaining({ code: 'E' })], text: 'Employer' },
        ],
        name: expect.objectContaining({ family: 'Kask', given: ['Mari'] }),
        telecom: [expect.objectContaining({ system: 'phone', value: '+3727300000', use: 'work' })],
        address: expect.objectContaining({ line: ['Ringtee 5'], city: 'Tartu', postalCode: '50105', country: 'EE' }),
        organization: { display: 'Tartu Bussijaam AS' },
        period: { start: '2020-01-01' },
      },
    ]);
    expect(withEmployer.unused).not.toContain('NK1-13');
    expect(checkResource(withEmployer.patient).filter((i) => i.severity === 'error')).toEqual([]); // R4 and the profile
    expect(c.patient.contact).toBeUndefined(); // the plain discharge has no employer row
  });

  test('PV1 → Encounter: finished, inpatient, period in Tallinn time, discharged home, with its diagnosis', () => {
    expect(enc.status).toBe('finished'); // A03
    expect(enc.class).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' }); // PV1-2 I
    expect(enc.period).toEqual({ start: '2026-11-01T10:00:00+02:00', end: '2026-11-10T12:00:00+02:00' }); // PV1-44/45, EET in November
    expect(enc.hospitalization?.dischargeDisposition?.coding?.[0]).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/discharge-disposition', code: 'home' }); // PV1-36 01
    expect(enc.identifier?.[0].value).toBe('V2026-001'); // PV1-19
    expect(enc.subject?.reference).toBe(`Patient/${c.patient.id}`);
    const cond = one<Condition>(c, 'Condition');
    expect(cond.code?.coding?.[0]).toMatchObject({ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I63.9' }); // DG1-3
    expect(cond.encounter?.reference).toBe(`Encounter/${enc.id}`);
    expect(enc.diagnosis).toEqual([{ condition: { reference: `Condition/${cond.id}` } }]); // IG: DG1 → Encounter.diagnosis too
  });

  test('the event and what was not used', () => {
    expect(c.event).toMatchObject({ type: 'ADT', trigger: 'A03', occurredAt: '2026-11-10T12:00:00+02:00' }); // EVN-6
    expect(c.unused).toEqual(expect.arrayContaining(['DG1-6'])); // the diagnosis type is not mapped
    expect(c.issues.filter((i) => i.severity === 'information').map((i) => i.expression?.[0])).toEqual(expect.arrayContaining(['DG1-6']));
    expect(c.issues.filter((i) => i.severity === 'error')).toEqual([]);
  });

  test('a re-sent message lands on the same ids', () => {
    const again = convert();
    expect(again.resources.map((r) => `${r.resourceType}/${r.id}`)).toEqual(c.resources.map((r) => `${r.resourceType}/${r.id}`));
  });
});

test('a summer discharge gets the EEST offset (+03:00)', () => {
  const c = convert({ eventTime: '20260715083000' });
  expect(c.event.occurredAt).toBe('2026-07-15T08:30:00+03:00');
});

test('A13 cancel discharge: the encounter is in progress again, without end or disposition', () => {
  const enc = one<Encounter>(convert({ trigger: 'A13' }), 'Encounter');
  expect(enc.status).toBe('in-progress');
  expect(enc.period?.end).toBeUndefined();
  expect(enc.hospitalization?.dischargeDisposition).toBeUndefined();
});

test('an invalid isikukood is an error at PID-3.1 (the message gets AE)', () => {
  const c = convert({ isikukood: '36805280108' }); // bad check digit (EVS 585)
  const errors = c.issues.filter((i) => i.severity === 'error');
  expect(errors).toHaveLength(1);
  expect(errors[0].expression).toEqual(['PID-3.1']);
  expect(errors[0].details?.coding?.[0].code).toBe(CATEGORIES.invalid.code);
  expect(CATEGORIES.invalid.msa1).toBe('AE');
});

test('the same person from two messages with different visits is one Patient, two Encounters', () => {
  const a = convert({ visit: 'V1' });
  const b = convert({ visit: 'V2', isikukood: '37302102711' });
  expect(a.patient.id).toBe(b.patient.id);
  expect(one<Encounter>(a, 'Encounter').id).not.toBe(one<Encounter>(b, 'Encounter').id);
});
