/**
 * Estonian identifiers (isikukood EVS 585 two-stage mod 11, Business Register codes,
 * canonical systems and aliases) and deterministic ids (RFC 4122 §4.3 UUID v5).
 */
import crypto from 'node:crypto';
import {
  checkIsikukood, checkRegistryCode, canonicalSystem, deterministicId, oneOffId, patientRecordSystem, uuidV5, SYSTEMS, ID_NAMESPACE,
} from '../../src/fhir/identifiers.js';

test.each([
  ['37302102711', '1973-02-10', 'male'], // stage I
  ['38001010015', '1980-01-01', 'male'], // needs stage II
  ['36805280109', '1968-05-28', 'male'],
  ['37302100490', '1973-02-10', 'male'], // both stages 10 → 0
  ['60101010006', '2001-01-01', 'female'], // computed here: 6 = woman born in the 2000s
])('isikukood %s is valid: born %s, %s', (code, birthDate, gender) => {
  expect(checkIsikukood(code)).toEqual({ valid: true, birthDate, gender });
});

test.each([
  ['36805280108', /check digit/], // checksum (also used wrongly in TEHIK examples)
  ['39406240016', /check digit/],
  ['39510212711', /check digit/],
  ['48501212711', /check digit/],
  ['3800101001', /11 digits/],
  ['380010100155', /11 digits/],
  ['90001010015', /first digit/],
  ['00001010015', /first digit/],
  ['38002300014', /real birth date/], // 30 February
  ['38013010012', /real birth date/], // month 13
])('isikukood %s is refused (%s)', (code, reason) => {
  const r = checkIsikukood(code);
  expect(r.valid).toBe(false);
  expect(r.reason).toMatch(reason);
});

test('registry codes: the eight real ones pass; a changed digit or length fails', () => {
  for (const c of ['10856624', '90006399', '75018816', '70009770', '74000091', '10822068', '11107913', '70001952']) expect(checkRegistryCode(c)).toBe(true);
  expect(checkRegistryCode('10856625')).toBe(false);
  expect(checkRegistryCode('1085662')).toBe(false);
});

test('systems: canonical URIs, prn per registry code, aliases accepted on input', () => {
  expect(SYSTEMS).toMatchObject({
    isikukood: 'https://fhir.ee/sid/pid/est/ni',
    professional: 'https://fhir.ee/sid/pro/est/pho',
    organisation: 'https://fhir.ee/sid/org/est/br',
    ehak: 'https://fhir.ee/sid/ehak',
  });
  expect(patientRecordSystem('90006399')).toBe('https://fhir.ee/sid/pid/est/prn/90006399');
  expect(canonicalSystem('https://fhir.ee/sid/org/est/xx')).toBe(SYSTEMS.organisation);
  expect(canonicalSystem('https://fhir.ee/sid/org/est/medre')).toBe(SYSTEMS.organisation);
  expect(canonicalSystem('https://fhir.ee/sid/pid/est/pho')).toBe(SYSTEMS.professional);
  expect(canonicalSystem('https://fhir.ee/sid/pro/est/medre')).toBe(SYSTEMS.professional);
});

test('uuidV5 matches RFC 4122 name-based UUIDs (Python uuid.uuid5 vectors)', () => {
  expect(uuidV5('6ba7b810-9dad-11d1-80b4-00c04fd430c8', 'python.org')).toBe('886313e1-3b8a-5372-9b90-0c9aee199e5d'); // NAMESPACE_DNS
  expect(uuidV5('6ba7b811-9dad-11d1-80b4-00c04fd430c8', 'https://fhir.ee/sid/pid/est/ni')).toBe('0d333d6e-0386-5c66-b6cf-b38a4647fcc2'); // NAMESPACE_URL
});

test('uuidV5 in our namespace (one-shot hash in a reused buffer) equals the plain SHA-1 construction', () => {
  const reference = (name: string): string => {
    const h = crypto.createHash('sha1').update(Buffer.from(ID_NAMESPACE.replaceAll('-', ''), 'hex')).update(name, 'utf8').digest();
    h[6] = (h[6] & 0x0f) | 0x50;
    h[8] = (h[8] & 0x3f) | 0x80;
    const x = h.subarray(0, 16).toString('hex');
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
  };
  // a long name first, then shorter ones (nothing of the longer may leak), non-ASCII, and past the buffer's size
  for (const name of ['x'.repeat(600), 'Patient\u001fa', '', 'Õunapuu Žukova Šmidt', 'ö'.repeat(700), 'y'.repeat(5000)]) {
    expect(uuidV5(ID_NAMESPACE, name)).toBe(reference(name));
  }
});

test('deterministic ids: stable, per type, normalised (whitespace, alias systems), valid FHIR ids', () => {
  const a = deterministicId('Patient', SYSTEMS.isikukood, '37302102711');
  expect(a).toBe(deterministicId('Patient', ` ${SYSTEMS.isikukood}`, '37302102711 '));
  expect(deterministicId('Practitioner', 'https://fhir.ee/sid/pid/est/pho', 'D12345')).toBe(deterministicId('Practitioner', SYSTEMS.professional, 'D12345'));
  expect(a).not.toBe(deterministicId('Encounter', SYSTEMS.isikukood, '37302102711'));
  expect(a).not.toBe(deterministicId('Patient', SYSTEMS.isikukood, '38001010015'));
  expect(a).toMatch(/^[A-Za-z0-9\-.]{1,64}$/); // FHIR id
  expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  // ids are memoised: the same inputs give the same id from the memo, and again after it has moved on
  const name = [ID_NAMESPACE, ['Patient', SYSTEMS.isikukood, '37302102711'].join('\u001f')] as const;
  expect(a).toBe(uuidV5(...name));
  expect(oneOffId('Patient', ` ${SYSTEMS.isikukood}`, '37302102711')).toBe(a); // the same id, not memoised
  // (the memo keeps two generations of 20,000: 45,000 ids pass through both and out again)
  for (let i = 0; i < 45_000; i++) deterministicId('Encounter', 'urn:x', String(i));
  expect(deterministicId('Patient', SYSTEMS.isikukood, '37302102711')).toBe(a);
  for (const i of [0, 19_999, 25_000, 44_999]) {
    expect(deterministicId('Encounter', 'urn:x', String(i))).toBe(uuidV5(ID_NAMESPACE, ['Encounter', 'urn:x', String(i)].join('\u001f')));
  }
});
