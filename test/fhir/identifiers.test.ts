/** Estonian identifiers (EVS 585 isikukood, Business Register codes) and deterministic ids. */
import { checkIsikukood, checkRegistryCode, deterministicId, canonicalSystem, SYSTEMS } from '../../src/fhir/identifiers.js';

test.each([
  ['37302102711', '1973-02-10', 'male'], // stage-I check digit
  ['36805280109', '1968-05-28', 'male'],
  ['38001010015', '1980-01-01', 'male'], // needs stage II
  ['37302100490', '1973-02-10', 'male'], // both stages give 10 → 0
])('%s is a valid isikukood born %s', (code, birthDate, gender) => {
  expect(checkIsikukood(code)).toEqual({ valid: true, birthDate, gender });
});

test.each([
  ['36805280108', /check digit/],
  ['39406240016', /check digit/],
  ['48501212711', /check digit/],
  ['3730210271', /11 digits/],
  ['97302102711', /first digit/],
  ['37302302715', /real birth date/],
  ['3730210271a', /11 digits/],
])('%s is refused (%s)', (code, reason) => {
  const r = checkIsikukood(code);
  expect(r.valid).toBe(false);
  expect(r.reason).toMatch(reason);
});

test('Business Register codes: real ones pass, a changed digit fails', () => {
  for (const c of ['10856624', '90006399', '75018816', '70009770', '74000091', '10822068', '11107913', '70001952']) expect(checkRegistryCode(c)).toBe(true);
  expect(checkRegistryCode('75018817')).toBe(false);
  expect(checkRegistryCode('7501881')).toBe(false);
});

test('deterministic ids are stable, distinct per input and valid FHIR ids', () => {
  const a = deterministicId('Patient', SYSTEMS.isikukood, '37302102711');
  expect(a).toBe(deterministicId('Patient', SYSTEMS.isikukood, '37302102711'));
  expect(a).not.toBe(deterministicId('Patient', SYSTEMS.isikukood, '36805280109'));
  expect(a).not.toBe(deterministicId('Encounter', SYSTEMS.isikukood, '37302102711'));
  expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('alias identifier systems are written in their canonical form', () => {
  expect(canonicalSystem('https://fhir.ee/sid/org/est/xx')).toBe(SYSTEMS.organisation);
  expect(canonicalSystem('https://fhir.ee/sid/pid/est/pho')).toBe(SYSTEMS.professional);
  expect(canonicalSystem(SYSTEMS.isikukood)).toBe(SYSTEMS.isikukood);
});
