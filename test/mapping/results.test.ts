/**
 * ORU^R01 results beyond one value per OBX: structured numerics without a comparator, OBX-5 repetitions; the people
 * of a v2.7+ result (PRT), the transcriptionist (OBR-35), the report's and order's numbers (ORC, OBR-53) and a
 * document sent with the result (ORDER_DOCUMENT: OBX, TXA) — as the V2-to-FHIR IG's ORU_R01 map says.
 * Messages are written here (a Tartu laboratory's blood count); isikukoodid are the fixtures' valid test vectors.
 */
import type { DiagnosticReport, DocumentReference, Encounter, Observation, Practitioner, Resource, ServiceRequest } from '@medplum/fhirtypes';
import { checkResource } from '../../src/write-checks.js';
import { convertHl7, type Conversion } from '../../src/mapping/hl7v2/convert.js';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { labResult, seg } from '../fixtures/hl7v2/messages.js';

const convert = (text: string): Conversion => convertHl7(parseHl7(text));
const ofType = <T extends Resource>(c: Conversion, type: T['resourceType']): T[] => c.resources.filter((r): r is T => r.resourceType === type);
/** the lab result with its OBX segments replaced by these */
const withObx = (...obx: string[]): string => [...labResult().split('\r').filter((s) => !s.startsWith('OBX')), ...obx].join('\r');

test('SN without a comparator ("^182") is the number; with one, the comparator is kept; OBX-6 is the unit', () => {
  const c = convert(withObx('OBX|1|SN|2345-7^Glucose^LN||^6.1|mmol/L^^UCUM|||||F', 'OBX|2|SN|2160-0^Creatinine^LN||<^40|umol/L^^UCUM|||||F'));
  const [glucose, creatinine] = ofType<Observation>(c, 'Observation');
  expect(glucose.valueQuantity).toEqual({ value: 6.1, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' });
  expect(creatinine.valueQuantity).toEqual({ value: 40, comparator: '<', unit: 'umol/L', system: 'http://unitsofmeasure.org', code: 'umol/L' });
});

test('a repeated OBX-5 is one component per value, each coded by OBX-3 (IG: OBX[Observation-Component]); text lines stay one text', () => {
  const c = convert(withObx('OBX|1|NM|8867-4^Heart rate^LN||64~118~|/min^^UCUM|||||F', 'OBX|2|TX|48767-8^Comment^LN||Patsient oli rahutu.~Kordusmõõtmine homme.||||||F'));
  const [pulse, comment] = ofType<Observation>(c, 'Observation');
  expect(pulse.valueQuantity).toBeUndefined();
  const code = { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }], text: 'Heart rate' };
  const perMin = { unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' };
  expect(pulse.component).toEqual([
    { code, valueQuantity: { value: 64, ...perMin } },
    { code, valueQuantity: { value: 118, ...perMin } }, // the empty third repetition is no value
  ]);
  expect(comment.valueString).toBe('Patsient oli rahutu.\nKordusmõõtmine homme.');
  expect(comment.component).toBeUndefined();
  expect(c.issues.filter((i) => i.severity === 'warning')).toEqual([]);
});

const person = (c: Conversion, ref: string | undefined): Practitioner | undefined => ofType<Practitioner>(c, 'Practitioner').find((p) => `Practitioner/${p.id}` === ref);

test('PRT naming a person (PRT-5) after an OBX is a performer of the Observation; after PV1 a participant of the visit; without PRT-5 nothing', () => {
  const [msh, pid, ...rest] = labResult().split('\r');
  const text = [
    msh,
    pid,
    seg('PV1', { 1: '1', 2: 'O', 19: 'V-77^^^ELVA_HAIGLA^VN' }),
    seg('PRT', { 2: 'AD', 4: 'AT^Attending^HL70912', 5: 'D66666^Mänd^Mari^^^Dr' }),
    ...rest.filter((x) => !x.startsWith('OBX')),
    'OBX|1|NM|718-7^Hemoglobin^LN||128|g/L^^UCUM|||||F',
    seg('PRT', { 2: 'AD', 4: 'RO^Responsible observer^HL70912', 5: 'N77777^Kask^Kai' }),
    seg('PRT', { 2: 'AD', 4: 'PO^Performing organization^HL70912', 8: 'Elva Haigla labor' }),
  ].join('\r');
  const c = convert(text);
  const [hb] = ofType<Observation>(c, 'Observation');
  expect(hb.performer?.map((r) => person(c, r.reference)?.identifier?.[0].value)).toEqual(['N77777']);
  const enc = ofType<Encounter>(c, 'Encounter')[0];
  expect(enc.participant?.map((p) => person(c, p.individual?.reference)?.identifier?.[0].value)).toContain('D66666');
  for (const r of c.resources) expect([r.resourceType, checkResource(r, [])]).toEqual([r.resourceType, []]);
});

test('OBR-35 transcriptionist and OBR-34 technician are performers with their function (event-performerFunction TRANS, SPRF)', () => {
  const c = convert(labResult().replace(/\rOBR\|[^\r]*/, (obr) => `${obr}|D55555&Kivi&Kalle|N88888&Tamm&Tiiu|S99999&Saar&Siim`));
  const [report] = ofType<DiagnosticReport>(c, 'DiagnosticReport');
  const fn = (r: { extension?: { valueCodeableConcept?: { coding?: { code?: string }[] } }[] }) => r.extension?.[0].valueCodeableConcept?.coding?.[0].code;
  expect(report.performer?.map((r) => [person(c, r.reference)?.identifier?.[0].value, fn(r)])).toEqual([
    ['N88888', 'SPRF'],
    ['S99999', 'TRANS'],
  ]);
  expect(checkResource(report, [])).toEqual([]);
});

test('the report carries the order numbers of its ORC (else OBR-2/3) and the placer group (ORC-4); the order its alternate number (OBR-53)', () => {
  const text = labResult()
    .replace(/\rORC\|[^\r]*/, `\r${seg('ORC', { 1: 'RE', 2: 'ORD-5501^PERE_EHR', 3: 'LAB-9901^ELVA_LIS', 4: 'GRP-12^PERE_EHR' })}`)
    .replace(/\rOBR\|[^\r]*/, (obr) => `${obr}${'|'.repeat(53 - obr.split('|').length + 1)}ALT-3^^^PERE_EHR`);
  const c = convert(text);
  const [report] = ofType<DiagnosticReport>(c, 'DiagnosticReport');
  expect(report.identifier?.map((i) => [i.type?.coding?.[0].code, i.value])).toEqual([
    ['PLAC', 'ORD-5501'],
    ['FILL', 'LAB-9901'],
    ['PGN', 'GRP-12'],
  ]);
  const [order] = ofType<ServiceRequest>(c, 'ServiceRequest');
  expect(order.identifier?.find((i) => i.value === 'ALT-3')?.type?.coding?.[0].code).toBe('PLAC');
});

test('a document sent with the result (OBX, TXA) is a DocumentReference whose body is that OBX only', () => {
  const [msh, pid, ...rest] = labResult().split('\r');
  const text = [
    msh,
    pid,
    'OBX|1|TX|11490-0^Discharge summary^LN||Patsient kotiti koju.',
    seg('TXA', { 1: '1', 2: 'DS^Discharge summary^L', 3: 'TX', 4: '20261121093000', 9: 'D12345^Perearst^Piret', 12: 'DOC-4411', 17: 'AU' }),
    ...rest,
  ].join('\r');
  const c = convert(text);
  const [doc] = ofType<DocumentReference>(c, 'DocumentReference');
  expect(doc.masterIdentifier?.value).toBe('DOC-4411');
  expect(doc.content).toHaveLength(1);
  expect(Buffer.from(doc.content[0].attachment.data!, 'base64').toString('utf8')).toBe('Patsient kotiti koju.'); // not the lab values after it
  expect(person(c, doc.author?.[0].reference)?.identifier?.[0].value).toBe('D12345');
  expect(c.unused).not.toContain('TXA');
});
