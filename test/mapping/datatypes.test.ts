/**
 * v2 datatypes → FHIR (V2-to-FHIR IG datatype maps): TS/DTM precision and time zones, CX systems, XPN, XTN.
 * FHIR dateTime with a time needs an offset; v2 timestamps without one get the default zone (Europe/Tallinn).
 */
import { dtm, xtn, cwe, ndlParts, xad } from '../../src/mapping/datatypes.js';
import { loadCodeTables } from '../../src/mapping/codes.js';
import { SYSTEMS } from '../../src/fhir/identifiers.js';

test.each([
  ['2026', 'dateTime', '2026'],
  ['202611', 'dateTime', '2026-11'],
  ['20261110', 'dateTime', '2026-11-10'],
  ['20261110', 'date', '2026-11-10'],
  ['202611101430', 'dateTime', '2026-11-10T14:30:00+02:00'], // EET in winter
  ['20260710143012', 'dateTime', '2026-07-10T14:30:12+03:00'], // EEST in summer; seconds kept
  ['20260710143012.1234', 'dateTime', '2026-07-10T14:30:12.1234+03:00'],
  ['20261110143012+0000', 'dateTime', '2026-11-10T14:30:12+00:00'], // the sender's offset wins
  ['20261110143012-0500', 'instant', '2026-11-10T14:30:12-05:00'],
  ['20261110143012', 'date', '2026-11-10'], // a date element keeps the date only
  ['20261110', 'instant', undefined], // an instant needs a time
  ['20261310', 'dateTime', undefined], // month 13
  ['not a date', 'dateTime', undefined],
])('%s as %s → %s', (text, kind, expected) => {
  expect(dtm(text, kind as 'date' | 'dateTime' | 'instant')).toBe(expected);
});

test('DST change night in Tallinn: 03:30 on 29 March 2026 is already +03:00', () => {
  expect(dtm('202603290430', 'dateTime')).toBe('2026-03-29T04:30:00+03:00');
  expect(dtm('202603290130', 'dateTime')).toBe('2026-03-29T01:30:00+02:00');
});

test('XTN: v2.5 components (equipment type, e-mail, unformatted) and older XTN-1', () => {
  expect(xtn([[''], ['PRN'], ['CP'], [''], [''], [''], [''], [''], [''], [''], [''], ['+37255512345']])).toEqual({ system: 'phone', value: '+37255512345', use: 'mobile' });
  expect(xtn([[''], ['NET'], ['Internet'], ['mari@example.ee']])).toEqual({ system: 'email', value: 'mari@example.ee' });
  expect(xtn([['(555)123-4567']], 'work')).toEqual({ system: 'phone', value: '(555)123-4567', use: 'work' });
});

test('CWE: coding systems by name (I10, LN, SCT, HL7nnnn) and the original text', () => {
  expect(cwe([['I63.9'], ['Ajuinfarkt'], ['I10']])).toEqual({ coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I63.9', display: 'Ajuinfarkt' }], text: 'Ajuinfarkt' });
  expect(cwe([['F'], ['Female'], ['HL70001']])?.coding?.[0].system).toBe('http://terminology.hl7.org/CodeSystem/v2-0001');
  expect(cwe([['8517006'], [''], ['SCT']])?.coding?.[0].system).toBe('http://snomed.info/sct');
});

test('NDL: the person is component 1 in subcomponents (OBR-32 result interpreter); the period after it is not the person', () => {
  const ndl = [['D55555', 'Kivi', 'Kalle', '', '', 'Dr'], ['20261121090000']];
  expect(ndlParts(ndl, { codes: loadCodeTables(), registryCodeOf: () => undefined })).toEqual({
    identifier: { system: SYSTEMS.professional, value: 'D55555' },
    name: { family: 'Kivi', given: ['Kalle'], prefix: ['Dr'] },
  });
  expect(ndlParts(undefined, { codes: loadCodeTables(), registryCodeOf: () => undefined })).toBeUndefined();
});

test('XAD: the addressee (XAD-19) is the line after the street and XAD-2; XAD-13/14, else the XAD-12 range, the period', () => {
  const ctx = { codes: loadCodeTables(), registryCodeOf: () => undefined };
  // 1 street ^ 2 other designation ^ 3 city ^ … ^ 12 validity range ^ 13 effective ^ 14 expiration ^ … ^ 19 addressee
  const rep = (fields: Record<number, string[]>): string[][] => Array.from({ length: 19 }, (_, i) => fields[i + 1] ?? ['']);
  expect(xad(rep({ 1: ['Rüütli tn 5'], 2: ['korter 3'], 3: ['Elva'], 5: ['61506'], 13: ['20240101'], 19: ['Mari Tamm c/o Jüri Tamm'] }), ctx)).toEqual({
    line: ['Rüütli tn 5', 'korter 3', 'Mari Tamm c/o Jüri Tamm'],
    city: 'Elva',
    postalCode: '61506',
    period: { start: '2024-01-01' },
  });
  expect(xad(rep({ 3: ['Elva'], 12: ['20200101', '20231231'] }), ctx)?.period).toEqual({ start: '2020-01-01', end: '2023-12-31' });
  expect(xad(rep({ 19: ['Mari Tamm'] }), ctx)).toEqual({ line: ['Mari Tamm'] }); // an addressee alone is still an address line
});
