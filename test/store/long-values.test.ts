/**
 * Long values in the search index, on every backend: a resource with a 3,000- or 10,000-character name, identifier,
 * string or URL is stored and indexed (a B-tree entry holds at most 2,704 bytes; index values are capped at
 * INDEX_VALUE_BYTES, indexer.ts) and found again by prefix, `:exact`, identifier and url.
 *
 * @see https://hl7.org/fhir/R4/search.html#string, #token, #uri
 */
import crypto from 'node:crypto';
import type { Patient, Questionnaire, Resource } from '@medplum/fhirtypes';
import { INDEX_VALUE_BYTES, indexKey, indexPrefix, indexRows } from '../../src/store/indexer.js';
import { migrate } from '../../src/store/schema.js';
import { normalizeString } from '../../src/fhir/searchparams.js';
import { backends, useStore } from '../helpers/backends.js';

/** `n` characters that do not compress (random letters), with accented and non-Latin ones among them. */
function noise(n: number, seed: string): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZõäöüšžÕÄÖÜŠŽжюя';
  let out = '';
  let block = Buffer.alloc(0);
  for (let i = 0; out.length < n; i++) {
    if (i % 32 === 0) block = crypto.createHash('sha256').update(`${seed}:${i}`).digest();
    out += alphabet[block[i % 32] % alphabet.length];
  }
  return out;
}

const SYSTEM = 'urn:oid:1.3.6.1.4.1.99999.1';

describe('index value caps', () => {
  test('short values are kept as they are', () => {
    expect(indexKey('Tamm')).toBe('Tamm');
    expect(indexPrefix('tamm')).toBe('tamm');
    expect(indexKey(null)).toBeNull();
    const edge = 'õ'.repeat(INDEX_VALUE_BYTES / 2); // exactly the limit in UTF-8
    expect(indexKey(edge)).toBe(edge);
  });

  test('a long value is cut between characters; an exact key adds the hash of the whole value', () => {
    const long = 'õ'.repeat(INDEX_VALUE_BYTES); // 1,024 bytes
    const p = indexPrefix(long);
    expect(Buffer.byteLength(p)).toBe(INDEX_VALUE_BYTES);
    expect(long.startsWith(p)).toBe(true);
    const k = indexKey(long);
    expect(Buffer.byteLength(k)).toBeLessThanOrEqual(INDEX_VALUE_BYTES);
    expect(k).toMatch(/^õ+#[A-Za-z0-9_-]{43}$/);
    expect(indexKey(long.slice(0, -1) + 'o')).not.toBe(k); // differing at the very end: another key
    // an odd byte budget never splits a two-byte character
    expect(indexPrefix('a' + long)).toBe('a' + 'õ'.repeat((INDEX_VALUE_BYTES - 2) / 2));
  });

  test('index rows of a resource with long values are capped, distinct values stay distinct', () => {
    const a = noise(3000, 'a');
    const rows = indexRows({ resourceType: 'Patient', id: 'p', name: [{ family: a }, { family: a.toUpperCase() }], identifier: [{ system: SYSTEM, value: a }] } as Resource);
    const family = rows.string.filter((r) => r.param === 'family');
    expect(family).toHaveLength(2);
    for (const r of family) {
      expect(Buffer.byteLength(r.value)).toBeLessThanOrEqual(INDEX_VALUE_BYTES);
      expect(Buffer.byteLength(r.exact!)).toBeLessThanOrEqual(INDEX_VALUE_BYTES);
    }
    expect(family[0].value).toBe(family[1].value); // the same normalised prefix …
    expect(family[0].exact).not.toBe(family[1].exact); // … two written forms
    expect(rows.token.find((r) => r.param === 'identifier')).toEqual({ param: 'identifier', system: SYSTEM, code: indexKey(a) });
  });
});

describe.each(backends())('long values on %s', (_name, makeBackend) => {
  const suite = useStore(makeBackend);
  const ids = async (resourceType: string, params: [string, string][]): Promise<string[]> =>
    (await suite.store.repo.search({ resourceType, params, count: 50 })).resources.map((r) => r.id!);

  const family3k = noise(3000, 'family');
  const given10k = noise(10_000, 'given');
  const line3k = noise(3000, 'line');
  const id3k = noise(3000, 'identifier');
  let patient: Patient;

  beforeAll(async () => {
    ({ resource: patient } = await suite.store.repo.create<Patient>({
      resourceType: 'Patient',
      identifier: [{ system: SYSTEM, value: id3k }],
      name: [{ family: family3k, given: [given10k] }],
      address: [{ line: [line3k], city: 'Tartu' }],
    }));
    // a second one sharing the first 3,000 characters of the given name, differing after them
    await suite.store.repo.create<Patient>({ resourceType: 'Patient', name: [{ family: 'Kask', given: [given10k.slice(0, 3000) + 'x'] }] });
  });

  test('the resource is stored and read back whole', async () => {
    const read = await suite.store.repo.read<Patient>('Patient', patient.id!);
    expect(read.name?.[0].family).toBe(family3k);
    expect(read.name?.[0].given?.[0]).toBe(given10k);
    expect(read.identifier?.[0].value).toBe(id3k);
  });

  test('found by a short prefix of the name, case- and accent-insensitively', async () => {
    expect(await ids('Patient', [['family', family3k.slice(0, 20).toUpperCase()]])).toEqual([patient.id]);
    expect(await ids('Patient', [['address', line3k.slice(0, 40)]])).toEqual([patient.id]);
  });

  test('found by the whole long value as a prefix (it compares on the capped prefix)', async () => {
    expect(await ids('Patient', [['family', family3k]])).toEqual([patient.id]);
    expect(await ids('Patient', [['given', given10k], ['family', 'Kask']])).toHaveLength(1); // the other one: same first bytes
    expect(await ids('Patient', [['given', given10k]])).toHaveLength(2);
  });

  test(':exact finds the whole value written as it is, and only that', async () => {
    expect(await ids('Patient', [['family:exact', family3k]])).toEqual([patient.id]);
    expect(await ids('Patient', [['given:exact', given10k]])).toEqual([patient.id]);
    expect(await ids('Patient', [['family:exact', family3k.slice(0, -1)]])).toEqual([]);
    expect(await ids('Patient', [['family:exact', family3k.slice(0, -1) + (family3k.endsWith('a') ? 'b' : 'a')]])).toEqual([]);
    expect(await ids('Patient', [['family:exact', family3k.toLowerCase()]])).toEqual([]);
  });

  test('found by the long identifier, with and without its system; a value differing at the end is no match', async () => {
    expect(await ids('Patient', [['identifier', `${SYSTEM}|${id3k}`]])).toEqual([patient.id]);
    expect(await ids('Patient', [['identifier', id3k]])).toEqual([patient.id]);
    expect(await ids('Patient', [['identifier', `${SYSTEM}|${id3k.slice(0, -1)}`]])).toEqual([]);
    expect(await ids('Patient', [['identifier:not', `${SYSTEM}|${id3k}`], ['_id', patient.id!]])).toEqual([]);
  });

  test('a long url (uri parameter) and a long system are stored and matched exactly', async () => {
    const url = `https://forms.example.ee/${noise(4000, 'url')}`;
    const system = `https://codes.example.ee/${noise(3000, 'system')}`;
    const { resource: q } = await suite.store.repo.create<Questionnaire>({ resourceType: 'Questionnaire', status: 'active', url, item: [{ linkId: '1', type: 'display', code: [{ system, code: 'x' }] }] });
    expect(await ids('Questionnaire', [['url', url]])).toEqual([q.id]);
    expect(await ids('Questionnaire', [['url', url + '/']])).toEqual([]);
    expect(await ids('Questionnaire', [['code', `${system}|x`]])).toEqual([q.id]);
  });

  test('an update replacing a long name leaves no row of the old one behind', async () => {
    const before = noise(3000, 'before');
    const after = noise(3000, 'after');
    const { resource: v1 } = await suite.store.repo.create<Patient>({ resourceType: 'Patient', name: [{ family: before }] });
    await suite.store.repo.update<Patient>({ ...v1, name: [{ family: after }] });
    expect(await ids('Patient', [['family', before]])).toEqual([]);
    expect(await ids('Patient', [['family:exact', after]])).toEqual([v1.id]);
  });

  test('schema migration 10 caps rows an earlier version wrote uncapped, so an update still removes them', async () => {
    const db = suite.store.db;
    const family = noise(700, 'old'); // under the B-tree limit: an earlier version stored it whole
    const value = `urn:old:${noise(900, 'old-id')}`;
    const { resource: v1 } = await suite.store.repo.create<Patient>({ resourceType: 'Patient', name: [{ family }], identifier: [{ system: value, value }] });
    const [{ seq }] = await db.query<{ seq: string }>(`SELECT seq::text AS seq FROM resource WHERE resource_type = 'Patient' AND id = $1`, [v1.id]);
    // the rows as the uncapped indexer wrote them
    await db.query(`UPDATE idx_string SET value = $1, exact = $2 WHERE resource_seq = $3::bigint AND param = 'family'`, [normalizeString(family), family, seq]);
    await db.query(`UPDATE idx_token SET system = $1, code = $1 WHERE resource_seq = $2::bigint AND param = 'identifier'`, [value, seq]);
    await db.query(`DELETE FROM schema_migrations WHERE version = 10`);
    expect(await migrate(db)).toEqual([10]);
    const rows = indexRows({ ...v1 } as Resource);
    const stored = await db.query<{ value: string; exact: string | null }>(`SELECT value, exact FROM idx_string WHERE resource_seq = $1::bigint AND param = 'family'`, [seq]);
    expect(stored).toEqual(rows.string.filter((r) => r.param === 'family').map(({ value, exact }) => ({ value, exact })));
    const tokens = await db.query<{ system: string; code: string }>(`SELECT system, code FROM idx_token WHERE resource_seq = $1::bigint AND param = 'identifier'`, [seq]);
    expect(tokens).toEqual([{ system: indexKey(value), code: indexKey(value) }]);
    // an update finds the rows it replaces
    await suite.store.repo.update<Patient>({ ...v1, name: [{ family: 'Saar' }], identifier: [{ system: 'urn:new', value: '1' }] });
    expect(await ids('Patient', [['family', family]])).toEqual([]);
    expect(await ids('Patient', [['identifier', `${value}|${value}`]])).toEqual([]);
    expect(await ids('Patient', [['family:exact', 'Saar']])).toEqual([v1.id]);
  });
});
