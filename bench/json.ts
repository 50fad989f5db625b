/**
 * Bounded JSON bodies (src/fhir/json.ts): how long a pathological 10 MB body takes to be refused, and what the
 * bounds cost a body that passes (decoding as strict UTF-8 and the one scan, next to plain `JSON.parse`).
 *
 * Run: `npm run bench -- json` (or, compiled, `node dist/bench/json.js`).
 */
import { fileURLToPath } from 'node:url';
import { DEFAULT_JSON_LIMITS, checkJsonShape, parseJsonBody } from '../src/fhir/json.js';
import { line, opsPerSecond } from './timing.js';

const MB10 = 10 * 1024 * 1024;

/** Milliseconds one refusal takes: the median of `runs` (the body is built once, outside the timing). */
function refusalMs(body: Buffer, runs = 15): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    try {
      parseJsonBody(body);
      throw new Error('the body was accepted');
    } catch (err) {
      if ((err as Error).message === 'the body was accepted') throw err;
    }
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return +times[Math.floor(runs / 2)].toFixed(2);
}

function transaction(n: number): string {
  const entry = [];
  for (let i = 0; i < n; i++) {
    entry.push({
      fullUrl: `urn:uuid:00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      resource: {
        resourceType: 'Patient',
        identifier: [{ system: 'https://fhir.ee/sid/pid/est/ni', value: String(37302100000 + i) }],
        name: [{ family: 'Tamm', given: ['Jüri'] }],
        gender: 'male',
        birthDate: '1973-02-10',
        address: [{ line: ['Õunapuu 5'], city: 'Tartu', postalCode: '51004' }],
      },
      request: { method: 'POST', url: 'Patient' },
    });
  }
  return JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry });
}

export function benchJson(): void {
  console.log('\n# bounded JSON bodies (src/fhir/json.ts), default limits');
  const pathological: [string, string][] = [
    ['10 MB of [[[[', '['.repeat(MB10)],
    ['one array of a million numbers', `[${Array.from({ length: 1_000_000 }, (_, i) => i * 7).join(',')}]`],
    ['a Patient with 400,000 identifiers', JSON.stringify({ resourceType: 'Patient', identifier: Array.from({ length: 400_000 }, (_, i) => ({ value: String(i) })) })],
    ['10 MB of {"a":{"a":…', '{"a":'.repeat(MB10 / 5)],
    ['an object of 600,000 members', JSON.stringify(Object.fromEntries(Array.from({ length: 600_000 }, (_, i) => [`k${i}`, 0])))],
    ['10 MB string ending in \\u0000', JSON.stringify(['x'.repeat(MB10 - 20)]).replace(/"\]$/, '\\u0000"]')],
  ];
  for (const [label, text] of pathological) {
    const body = Buffer.from(text, 'utf8');
    line(`refused: ${label}`, { MB: +(body.length / 1048576).toFixed(1), msMedian: refusalMs(body) });
  }
  for (const n of [100, 1000]) {
    const text = transaction(n);
    const body = Buffer.from(text, 'utf8');
    const plain = opsPerSecond(() => JSON.parse(body.toString('utf8')), 1500);
    const bounded = opsPerSecond(() => parseJsonBody(body, DEFAULT_JSON_LIMITS), 1500);
    const scan = opsPerSecond(() => checkJsonShape(text), 1500);
    line(`accepted: ${n}-entry transaction (${(body.length / 1024).toFixed(0)} KB)`, {
      plainParseUs: plain.usPerOp,
      boundedParseUs: bounded.usPerOp,
      scanOnlyUs: scan.usPerOp,
    });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) benchJson();
