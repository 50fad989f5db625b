/**
 * Bounded JSON request bodies (src/fhir/json.ts): every limit, NUL raw and escaped, bytes that are not UTF-8, syntax
 * errors, a declared charset other than UTF-8 — each an OperationOutcome with its status — and the positive
 * controls: a normal Patient and a real 1,000-entry transaction Bundle parse as they are.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8259, https://hl7.org/fhir/R4/json.html, https://hl7.org/fhir/R4/http.html#transaction
 */
import type { Bundle, BundleEntry, Patient } from '@medplum/fhirtypes';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { DEFAULT_JSON_LIMITS, bundleEntryLimit, checkJsonCharset, checkJsonShape, parseJsonBody } from '../../src/fhir/json.js';
import { loadConfig } from '../../src/config.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';

function refusal(f: () => unknown): OutcomeError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(OutcomeError);
    return err as OutcomeError;
  }
  throw new Error('expected an OutcomeError, but the call succeeded');
}

const parse = (text: string, limits = DEFAULT_JSON_LIMITS): unknown => parseJsonBody(Buffer.from(text, 'utf8'), limits);

const tamm: Patient = {
  resourceType: 'Patient',
  identifier: [{ system: NI, value: '37302102711' }],
  name: [{ family: 'Tamm', given: ['Jüri'] }],
  gender: 'male',
  birthDate: '1973-02-10',
  address: [{ line: ['Õunapuu 5'], city: 'Tartu' }],
};

/** A discharge-sized transaction of `n` entries: Patients, Encounters and Observations referring by urn:uuid. */
function transaction(n: number): Bundle {
  const entry: BundleEntry[] = [];
  for (let i = 0; i < n; i++) {
    const uuid = `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    if (i % 3 === 0) entry.push({ fullUrl: uuid, resource: { ...tamm, identifier: [{ system: NI, value: String(37302100000 + i) }] }, request: { method: 'POST', url: 'Patient' } });
    else if (i % 3 === 1)
      entry.push({
        fullUrl: uuid,
        resource: { resourceType: 'Encounter', status: 'finished', class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' }, period: { start: '2026-11-01T08:00:00Z', end: '2026-11-10T12:00:00Z' } },
        request: { method: 'POST', url: 'Encounter' },
      });
    else
      entry.push({
        fullUrl: uuid,
        resource: { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] }, valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' } },
        request: { method: 'POST', url: 'Observation' },
      });
  }
  return { resourceType: 'Bundle', type: 'transaction', entry };
}

describe('positive controls', () => {
  test('a normal Patient parses as it is', () => {
    expect(parse(JSON.stringify(tamm, null, 2))).toEqual(tamm);
  });

  test('a real 1,000-entry transaction Bundle parses and is within the entry limit', () => {
    const bundle = transaction(1000);
    const parsed = parse(JSON.stringify(bundle));
    expect(parsed).toEqual(bundle);
    expect(() => bundleEntryLimit(parsed)).not.toThrow();
  });

  test('strings holding brackets, quotes, escaped backslashes and a literal \\u0000 are text, not structure', () => {
    const tricky = { resourceType: 'Basic', text: '[[[{{{ "quoted" \\ ]]]', path: 'C:\\u0000dir\\', deep: '['.repeat(500) };
    expect(parse(JSON.stringify(tricky))).toEqual(tricky);
  });

  test('an array of exactly the limit, and nesting exactly at the limit, pass', () => {
    expect(parse(JSON.stringify({ a: new Array(10).fill(1) }), { ...DEFAULT_JSON_LIMITS, maxArray: 10 })).toEqual({ a: new Array(10).fill(1) });
    const nested = '['.repeat(100) + ']'.repeat(100);
    expect(() => parse(nested)).not.toThrow();
  });

  test('a byte order mark is dropped', () => {
    expect(parseJsonBody(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(tamm))]))).toEqual(tamm);
  });
});

describe('limits → 413 too-large', () => {
  test('nesting deeper than maxDepth', () => {
    const e = refusal(() => parse('['.repeat(101) + ']'.repeat(101)));
    expect(e.category).toBe('too-large');
    expect(e.status).toBe(413);
    expect(e.outcome.issue[0].code).toBe('too-costly');
    expect(e.message).toMatch(/more than 100 deep.*MAX_JSON_DEPTH/);
    // objects count too, and keys in between do not confuse the depth
    const objects = '{"a":'.repeat(101) + '1' + '}'.repeat(101);
    expect(refusal(() => parse(objects)).category).toBe('too-large');
    expect(() => parse('{"a":'.repeat(100) + '1' + '}'.repeat(100))).not.toThrow();
  });

  test('an array longer than maxArray, at any depth', () => {
    const e = refusal(() => parse(JSON.stringify({ resourceType: 'Patient', identifier: Array.from({ length: 1_001 }, (_, i) => ({ value: String(i) })) })));
    expect(e.status).toBe(413);
    expect(e.message).toMatch(/more than 1000 elements.*MAX_ARRAY_LENGTH/);
    expect(refusal(() => parse(`[${new Array(11).fill('"x"').join(',')}]`, { ...DEFAULT_JSON_LIMITS, maxArray: 10 })).status).toBe(413);
    expect(refusal(() => parse(`{"a":[[${new Array(11).fill('true').join(', ')}]]}`, { ...DEFAULT_JSON_LIMITS, maxArray: 10 })).status).toBe(413);
  });

  test('object members are not array elements (bounded by the value count instead)', () => {
    const obj = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i]));
    expect(parse(JSON.stringify(obj), { ...DEFAULT_JSON_LIMITS, maxArray: 10 })).toEqual(obj);
  });

  test('more JSON values than maxElements', () => {
    const limits = { ...DEFAULT_JSON_LIMITS, maxElements: 50 };
    // 10 arrays of 4 numbers = 1 + 10 + 40 = 51 values
    const body = JSON.stringify(Array.from({ length: 10 }, () => [1, 2, 3, 4]));
    const e = refusal(() => parse(body, limits));
    expect(e.status).toBe(413);
    expect(e.message).toMatch(/more than 50 JSON values.*MAX_JSON_VALUES/);
    expect(() => parse(body, { ...limits, maxElements: 51 })).not.toThrow();
    // keys are not values: {"a":1,"b":2} is 3
    expect(() => parse('{"a":1,"b":2}', { ...limits, maxElements: 3 })).not.toThrow();
    expect(refusal(() => parse('{"a":1,"b":2}', { ...limits, maxElements: 2 })).status).toBe(413);
  });

  test('a Bundle with more entries than maxBundleEntries', () => {
    const big = parse(JSON.stringify(transaction(1001)), { ...DEFAULT_JSON_LIMITS, maxArray: 2000 });
    const e = refusal(() => bundleEntryLimit(big));
    expect(e.status).toBe(413);
    expect(e.outcome.issue[0].expression).toEqual(['Bundle.entry']);
    expect(e.message).toMatch(/1001 entries; at most 1000.*MAX_BUNDLE_ENTRIES/);
    expect(() => bundleEntryLimit(big, { maxBundleEntries: 1001 })).not.toThrow();
    expect(() => bundleEntryLimit(tamm)).not.toThrow();
    expect(() => bundleEntryLimit(null)).not.toThrow();
  });
});

describe('content → 400', () => {
  test('a raw NUL character, in a string or outside', () => {
    for (const text of ['{"resourceType":"Patient","id":"a\u0000b"}', '{"resourceType":"Patient"}\u0000']) {
      const e = refusal(() => parse(text));
      expect(e.status).toBe(400);
      expect(e.category).toBe('structure');
      expect(e.message).toMatch(/NUL character/);
    }
  });

  test('an escaped NUL (\\u0000) in a value or a key', () => {
    for (const text of ['{"resourceType":"Patient","name":[{"family":"Tamm\\u0000"}]}', '{"a\\u0000":1}', '["\\\\\\u0000"]']) {
      const e = refusal(() => parse(text));
      expect(e.status).toBe(400);
      expect(e.message).toMatch(/NUL character/);
    }
    // an escaped backslash followed by u0000 is the text "\u0000", not a NUL
    expect(parse('["\\\\u0000"]')).toEqual(['\\u0000']);
  });

  test('bytes that are not UTF-8 (Latin-1 õ, a truncated sequence, an overlong encoding)', () => {
    for (const bytes of [
      Buffer.concat([Buffer.from('{"resourceType":"Patient","name":[{"family":"'), Buffer.from([0xd5]), Buffer.from('unapuu"}]}')]),
      Buffer.concat([Buffer.from('["'), Buffer.from([0xe0, 0xa4]), Buffer.from('"]')]),
      Buffer.concat([Buffer.from('["'), Buffer.from([0xc0, 0xaf]), Buffer.from('"]')]),
    ]) {
      const e = refusal(() => parseJsonBody(bytes));
      expect(e.status).toBe(400);
      expect(e.category).toBe('structure');
      expect(e.message).toMatch(/not valid UTF-8/);
    }
  });

  test('a JSON syntax error, an empty body, an unterminated string, stray closers', () => {
    for (const text of ['{"resourceType":"Patient",}', '', '{"a":"b', ']]]', '{"a":1}}', 'nul', '[1 2]']) {
      const e = refusal(() => parse(text));
      expect(e.status).toBe(400);
      expect(e.category).toBe('structure');
      expect(e.message).toMatch(/not valid JSON/);
    }
  });
});

describe('checkJsonCharset', () => {
  test('no charset, utf-8 and utf8 (any case, quoted) pass', () => {
    for (const ct of [undefined, '', 'application/fhir+json', 'application/fhir+json; charset=utf-8', 'application/json;charset=UTF-8', 'application/fhir+json; charset="utf8"', 'application/fhir+json; fhirVersion=4.0']) {
      expect(() => checkJsonCharset(ct)).not.toThrow();
    }
  });

  test('any other charset is refused with a clear message', () => {
    for (const ct of ['application/fhir+json; charset=iso-8859-1', 'application/json; charset=windows-1257', 'application/fhir+json;charset="UTF-16"']) {
      const e = refusal(() => checkJsonCharset(ct));
      expect(e.status).toBe(400);
      expect(e.category).toBe('unsupported');
      expect(e.message).toMatch(/FHIR JSON is UTF-8/);
      expect(e.outcome.issue[0].expression).toEqual(['Content-Type']);
    }
  });
});

describe('pathological 10 MB bodies are refused at once', () => {
  // a sanity bound only: speed is measured in bench/json.ts (these take a few milliseconds)
  const cases: [string, () => string][] = [
    ['10 MB of [[[[', () => '['.repeat(10 * 1024 * 1024)],
    ['one array of a million numbers', () => `[${Array.from({ length: 1_000_000 }, (_, i) => i).join(',')}]`],
    ['a Patient with 400,000 identifiers', () => JSON.stringify({ resourceType: 'Patient', identifier: Array.from({ length: 400_000 }, (_, i) => ({ value: String(i) })) })],
  ];
  test.each(cases)('%s', (_name, make) => {
    const body = Buffer.from(make(), 'utf8');
    const started = performance.now();
    expect(refusal(() => parseJsonBody(body)).status).toBe(413);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  test('the scan alone is linear on a body full of backslashes and quotes', () => {
    const s = JSON.stringify(['\\"'.repeat(1_000_000), '\\'.repeat(1_000_000)]);
    const started = performance.now();
    expect(() => checkJsonShape(s)).not.toThrow();
    expect(performance.now() - started).toBeLessThan(2000);
  });
});

describe('configuration', () => {
  test('MAX_JSON_DEPTH, MAX_ARRAY_LENGTH, MAX_JSON_VALUES, MAX_BUNDLE_ENTRIES, with their defaults', () => {
    expect(loadConfig({}).jsonLimits).toEqual({ maxDepth: 100, maxArray: 1_000, maxElements: 500_000, maxBundleEntries: 1_000 });
    expect(loadConfig({ MAX_JSON_DEPTH: '64', MAX_ARRAY_LENGTH: '500', MAX_JSON_VALUES: '1000', MAX_BUNDLE_ENTRIES: '50' }).jsonLimits).toEqual({
      maxDepth: 64,
      maxArray: 500,
      maxElements: 1000,
      maxBundleEntries: 50,
    });
    expect(() => loadConfig({ MAX_JSON_DEPTH: '5000' })).toThrow(/MAX_JSON_DEPTH must be between 1 and 1000/);
    expect(() => loadConfig({ MAX_BUNDLE_ENTRIES: '0' })).toThrow(/MAX_BUNDLE_ENTRIES must be between 1/);
    expect(() => loadConfig({ MAX_ARRAY_LENGTH: 'many' })).toThrow(/MAX_ARRAY_LENGTH must be a non-negative integer/);
  });
});
