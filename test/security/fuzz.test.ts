/**
 * A small fuzz harness over the parsers that take outside input first: the HL7 v2 decoder, parser and converter,
 * the municipal CSV reader, and the search-parameter parser. Seeded mutations of the project's own fixtures (and
 * random bytes); each parser must either return or refuse with its own error — never throw a TypeError, a
 * RangeError or hang. Bounded: a fixed number of cases per target (FUZZ_CASES, default 1,500), so CI time stays
 * small; a run prints its seed, and FUZZ_SEED reproduces it.
 */
import { decodeHl7 } from '../../src/hl7v2/decode.js';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { convertMessage } from '../../src/ingest/hl7v2/process.js';
import { CsvReader, CsvError } from '../../src/social/csv.js';
import { buildSearch, parseSearchQuery } from '../../src/store/search.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { eeDischarge, eeMerge, gpReferral } from '../fixtures/hl7v2/messages.js';

const CASES = Number(process.env.FUZZ_CASES ?? 1500);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

/** mulberry32: a small seeded generator, so a failing case can be replayed */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SPECIAL = ['|', '^', '~', '\\', '&', '\r', '\n', '\u000b', '\u001c', '\u0000', '\ufeff', 'é', '😀', '"', ';', ',', '%', '$', ':', '=', '?', '*', '\\X0D\\', '\\.br\\', '\\F\\', '%00', '%zz', '\ud800'];

function mutate(text: string, r: () => number): string {
  let s = text;
  const n = 1 + Math.floor(r() * 6);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(r() * (s.length + 1));
    const op = r();
    if (op < 0.3) s = s.slice(0, at) + SPECIAL[Math.floor(r() * SPECIAL.length)] + s.slice(at);
    else if (op < 0.5) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(r() * 20));
    else if (op < 0.65) s = s.slice(0, at) + s.slice(Math.floor(r() * s.length)).slice(0, 200) + s.slice(at);
    else if (op < 0.8) s = s.slice(0, at) + String.fromCharCode(Math.floor(r() * 0x3000)) + s.slice(at);
    else if (op < 0.9) s = s.slice(0, at);
    else s = s.slice(0, at) + s.slice(at).split('').reverse().join('').slice(0, 50) + s.slice(at + 50);
  }
  return s;
}

/** An error the parser raises on purpose (refusal), as opposed to a crash. */
const refusal = (e: unknown) => e instanceof OutcomeError || e instanceof CsvError || (e instanceof Error && !(e instanceof TypeError) && !(e instanceof RangeError) && !(e instanceof ReferenceError));

function fuzz(name: string, seedOffset: number, inputs: string[], run: (input: string) => void): void {
  const r = rng(SEED + seedOffset);
  const crashes: string[] = [];
  for (let i = 0; i < CASES && crashes.length < 5; i++) {
    const input = r() < 0.05 ? Array.from({ length: Math.floor(r() * 300) }, () => String.fromCharCode(Math.floor(r() * 256))).join('') : mutate(inputs[i % inputs.length], r);
    try {
      run(input);
    } catch (e) {
      if (!refusal(e)) crashes.push(`${(e as Error).name}: ${(e as Error).message} — input ${JSON.stringify(input.slice(0, 300))}`);
    }
  }
  if (crashes.length) throw new Error(`${name}: ${crashes.length} crash(es) with FUZZ_SEED=${SEED}:\n${crashes.join('\n')}`);
}

describe(`fuzz (FUZZ_SEED=${SEED}, ${CASES} cases a target)`, () => {
  const messages = [eeDischarge(), eeDischarge({ trigger: 'A01' }), eeMerge('37302102711', '49001010003'), gpReferral()];

  test('HL7 v2: decode, parse and convert refuse bad messages with their own errors', () => {
    fuzz('hl7v2', 1, messages, (m) => {
      const d = decodeHl7(Buffer.from(m, 'utf8'));
      parseHl7(d.text);
      convertMessage(d.text, { validate: false });
    });
  });

  test('CSV reader: any text in any chunking', () => {
    const csv = 'Otsuse nr;Isikukood;Teenus;Algus;Märkus\nT-1;37302102711;koduteenus;2026-11-15;"elab üksi; ""abi"" esmaspäeviti"\r\nT-2;49001010003;tugiisik;2026-11-16;\n';
    fuzz('csv', 2, [csv], (text) => {
      const reader = new CsvReader(';');
      const cut = Math.max(1, Math.floor(text.length / 3));
      reader.push(text.slice(0, cut));
      reader.push(text.slice(cut));
      reader.end();
    });
  });

  test('search parameters: parsing and building refuse bad queries with an OperationOutcome', () => {
    const queries = [
      'patient.identifier=https://fhir.ee/sid/pid/est/ni|37302102711&_include=CarePlan:care-team&_revinclude=Provenance:target',
      'participant=Organization/ehak-0793&status=active&_count=50&_sort=-_lastUpdated',
      'date=ge2026-01-01&date=lt2026-12-31T10:00:00Z&code:not=x|y&_has:Encounter:subject:status=finished',
      'name:contains=tamm&birthdate=ap1973-02&_elements=id,name&_summary=true&subject:Patient.name:exact=Jüri',
      'value-quantity=gt5.4|http://unitsofmeasure.org|mg&_id=a,b,c&_lastUpdated=sa2026&identifier:missing=true',
    ];
    const types = ['CarePlan', 'CareTeam', 'Observation', 'Patient', 'Encounter'];
    let i = 0;
    fuzz('search', 3, queries, (q) => {
      const params = parseSearchQuery(q);
      buildSearch({ resourceType: types[i++ % types.length], params, count: 20, strict: i % 2 === 0 });
    });
  });
});
