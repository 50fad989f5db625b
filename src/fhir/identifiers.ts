/**
 * Estonian identifier systems and checks, and deterministic resource ids derived from source identifiers.
 *
 * - Isikukood (personal identification code) GYYMMDDSSSC: G century and sex (1–8), a real birth date, serial,
 *   and a check digit by the two-stage mod-11 rule (weights 1 2 3 4 5 6 7 8 9 1, then 3 4 5 6 7 8 9 1 2 3;
 *   10 twice → 0). Standard EVS 585:2007.
 * - Business Register codes (8 digits; local governments start with 75): mod-11 check digit, weights 1–7, then 3–9.
 *
 * @see https://fhir.ee (identifier systems)
 */
import crypto from 'node:crypto';

/** Canonical Estonian identifier systems (EE Terminology CodeSystem / NamingSystems). */
export const SYSTEMS = {
  isikukood: 'https://fhir.ee/sid/pid/est/ni',
  /** + `/{registry code of the facility}` */
  patientRecordNumber: 'https://fhir.ee/sid/pid/est/prn',
  professional: 'https://fhir.ee/sid/pro/est/pho',
  organisation: 'https://fhir.ee/sid/org/est/br',
  ehak: 'https://fhir.ee/sid/ehak',
} as const;

/** Security labels of confidentiality (R restricted, V very restricted) in `meta.security`. */
export const CONFIDENTIALITY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';

/** Older or inconsistent system URIs found in the wild, accepted on input and written in canonical form. */
export const SYSTEM_ALIASES: Record<string, string> = {
  'https://fhir.ee/sid/org/est/xx': SYSTEMS.organisation,
  'https://fhir.ee/sid/org/est/medre': SYSTEMS.organisation,
  'https://fhir.ee/sid/pid/est/pho': SYSTEMS.professional,
  'https://fhir.ee/sid/pro/est/medre': SYSTEMS.professional,
  'urn:oid:1.3.6.1.4.1.28284.6.2.2.1': SYSTEMS.isikukood,
};

/** The system of patient numbers a care provider issues: `https://fhir.ee/sid/pid/est/prn/{registry code}`. */
export function patientRecordSystem(registryCode: string): string {
  return `${SYSTEMS.patientRecordNumber}/${registryCode}`;
}

/** An identifier system as written on output: aliases (old or NamingSystem spellings) → the canonical URI. */
export function canonicalSystem(system: string): string {
  // most parts of an id are not aliases at all: no table lookup (which hashes the whole string) unless the length fits
  if (!ALIAS_LENGTHS.has(system.length)) return system;
  return SYSTEM_ALIASES[system] ?? system;
}
const ALIAS_LENGTHS = new Set(Object.keys(SYSTEM_ALIASES).map((k) => k.length));

export interface IsikukoodCheck {
  valid: boolean;
  /** why it is not valid */
  reason?: string;
  birthDate?: string;
  gender?: 'male' | 'female';
}

function mod11(digits: number[], weights: number[]): number {
  return digits.reduce((sum, d, i) => sum + d * weights[i], 0) % 11;
}

/** The check digit of the first ten digits of an isikukood. */
export function isikukoodCheckDigit(first10: string): number {
  const d = [...first10].map(Number);
  const a = mod11(d, [1, 2, 3, 4, 5, 6, 7, 8, 9, 1]);
  if (a !== 10) return a;
  const b = mod11(d, [3, 4, 5, 6, 7, 8, 9, 1, 2, 3]);
  return b === 10 ? 0 : b;
}

/**
 * Validates an isikukood: 11 digits, century/sex digit 1–8, a real birth date, the two-stage mod-11 check digit.
 * A valid code also yields the birth date and administrative gender it encodes.
 */
export function checkIsikukood(code: string): IsikukoodCheck {
  if (!/^\d{11}$/.test(code)) return { valid: false, reason: `an isikukood has 11 digits, got ${code.length} character(s)${/^\d*$/.test(code) ? '' : ' that are not all digits'}` };
  const g = Number(code[0]);
  if (g < 1 || g > 8) return { valid: false, reason: `the first digit (century and sex) must be 1–8, got ${g}` };
  const century = 1800 + Math.floor((g - 1) / 2) * 100;
  const year = century + Number(code.slice(1, 3));
  const month = Number(code.slice(3, 5));
  const day = Number(code.slice(5, 7));
  const date = new Date(Date.UTC(year, month - 1, day));
  if (month < 1 || month > 12 || date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) {
    return { valid: false, reason: `digits 2–7 are not a real birth date` };
  }
  const check = isikukoodCheckDigit(code.slice(0, 10));
  if (check !== Number(code[10])) return { valid: false, reason: `the check digit is ${code[10]} but should be ${check}` };
  return {
    valid: true,
    birthDate: `${year}-${code.slice(3, 5)}-${code.slice(5, 7)}`,
    gender: g % 2 === 1 ? 'male' : 'female',
  };
}

/** Estonian Business Register code check: 8 digits, check digit mod 11 with weights 1–7, else 3–9, else 0. */
export function checkRegistryCode(code: string): boolean {
  if (!/^\d{8}$/.test(code)) return false;
  const d = [...code.slice(0, 7)].map(Number);
  let c = mod11(d, [1, 2, 3, 4, 5, 6, 7]);
  if (c === 10) c = mod11(d, [3, 4, 5, 6, 7, 8, 9]);
  if (c === 10) c = 0;
  return c === Number(code[7]);
}

/** The UUID namespace of care-gateway's name-based ids (a fixed random UUID; never change it: ids would move). */
export const ID_NAMESPACE = '6f1c7f0e-3b8a-4d2e-9c55-0b7d2a61c4e9';

const ID_NAMESPACE_BYTES = Buffer.from(ID_NAMESPACE.replaceAll('-', ''), 'hex');
/** ID_NAMESPACE followed by room for a name (uuidV5 is synchronous, so one buffer serves every call) */
const NAME_SCRATCH = Buffer.alloc(2048);
ID_NAMESPACE_BYTES.copy(NAME_SCRATCH);
/** `crypto.hash` (Node ≥ 20.12): a one-shot digest, about twice as fast as a Hash object for short inputs */
const oneShot = (crypto as unknown as { hash?: (alg: string, data: Buffer, enc: 'buffer') => Buffer }).hash;

/** An RFC 4122 §4.3 name-based UUID, version 5 (SHA-1), of a name within a namespace UUID. */
export function uuidV5(namespace: string, name: string): string {
  let h: Buffer;
  if (namespace === ID_NAMESPACE && oneShot && name.length * 3 <= NAME_SCRATCH.length - 16) {
    // the common case without a Hash object: namespace and name in a reused buffer, hashed in one call
    const n = NAME_SCRATCH.write(name, 16, 'utf8');
    h = oneShot('sha1', NAME_SCRATCH.subarray(0, 16 + n), 'buffer') as Buffer;
  } else {
    const ns = namespace === ID_NAMESPACE ? ID_NAMESPACE_BYTES : Buffer.from(namespace.replaceAll('-', ''), 'hex');
    h = crypto.createHash('sha1').update(ns).update(name, 'utf8').digest();
  }
  h[6] = (h[6] & 0x0f) | 0x50;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** A source identifier part as it goes into an id: trimmed, Unicode NFC, alias systems in canonical form. */
export function normaliseIdPart(part: string): string {
  return canonicalSystem(part.trim().normalize('NFC'));
}

/**
 * A resource id derived from source identifiers: {@link uuidV5} in {@link ID_NAMESPACE} of the resource type and
 * the normalised parts (joined with U+001F). The same inputs always give the same id, so a re-sent message lands
 * on the same resource instead of a duplicate. The result (36 chars of [0-9a-f-]) is a valid FHIR id.
 *
 * @example deterministicId('Patient', SYSTEMS.isikukood, '37302102711')
 */
export function deterministicId(resourceType: string, ...parts: string[]): string {
  // the same organisations, practitioners and people come again and again: a bounded memo saves the hashing
  const key = `${resourceType}\u001f${parts.join('\u001f')}`;
  let id = idMemo.get(key);
  if (id === undefined) {
    id = idMemoOld.get(key) ?? oneOffId(resourceType, ...parts);
    // two generations instead of evicting the oldest entry one by one: deleting from the front of a Map leaves
    // tombstones that every `keys().next()` walks again (that eviction was 16 % of a whole HL7 conversion)
    if (idMemo.size >= ID_MEMO_SIZE) {
      idMemoOld = idMemo;
      idMemo = new Map();
    }
    idMemo.set(key, id);
  }
  return id;
}

/**
 * The same id as {@link deterministicId}, without the memo: for ids made once and not asked for again (the
 * Provenance of one write names exact versions), which would only push the recurring ones out of the memo.
 */
export function oneOffId(resourceType: string, ...parts: string[]): string {
  return uuidV5(ID_NAMESPACE, [resourceType, ...parts.map(normaliseIdPart)].join('\u001f'));
}
const ID_MEMO_SIZE = 20_000;
let idMemo = new Map<string, string>();
let idMemoOld = new Map<string, string>();

/** An isikukood for ACKs, reports, lists and logs: the first and the last digit only (never the whole code). */
export function maskIsikukood(v: string): string {
  return v.length > 2 ? `${v[0]}${'*'.repeat(v.length - 2)}${v[v.length - 1]}` : '**';
}
