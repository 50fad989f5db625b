/**
 * ORU^R01 results beyond one value per OBX: structured numerics without a comparator, OBX-5 repetitions.
 * Messages are written here (a Tartu laboratory's blood count); isikukoodid are the fixtures' valid test vectors.
 */
import type { Observation, Resource } from '@medplum/fhirtypes';
import { convertHl7, type Conversion } from '../../src/mapping/hl7v2/convert.js';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { labResult } from '../fixtures/hl7v2/messages.js';

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
