/**
 * Fidelity against Microsoft FHIR-Converter: for every message of its corpus folder that has an `.expected.json`
 * (their converter's output), how many of the facts their Bundle carries (facts.ts) our own conversion of the same
 * message carries too. Prints one table per run; FIDELITY_VERBOSE=1 also lists each message's missing facts.
 *
 * FLOOR is a ratchet: the share measured when it was last raised, rounded down to a whole percent. A mapping that
 * carries more raises it; nothing may lower it. A message we refuse (an unsupported structure) carries 0 of its facts.
 * Skipped without the shared corpus (CG_CORPUS_DIR).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, Encounter, Patient, Practitioner, Resource } from '@medplum/fhirtypes';
import { decodeHl7 } from '../../src/hl7v2/decode.js';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { facilityCharset } from '../../src/mapping/hl7v2/load.js';
import { convertMessage } from '../../src/ingest/hl7v2/process.js';
import { corpusDir, corpusFiles, describeCorpus } from '../helpers/corpus.js';
import { carried, facts, sameValue, type Fact } from './facts.js';

/** total carried / total expected must stay at or above this: 1632 of 1802 facts (90.6 %) when it was last raised */
const FLOOR = 0.9;

const SUB = 'hl7v2/microsoft-fhir-converter';

interface Row {
  message: string;
  structure: string;
  expected: number;
  carried: number;
  missing: Fact[];
  note: string;
}

/** Our resources for one message, as the receiver would convert it; a refused message has none. */
function ours(text: string): { resources: Resource[]; note: string } {
  const c = convertMessage(text);
  if (c.kind === 'fault') throw c.error;
  if (c.kind === 'refused') return { resources: [], note: `refused: ${c.reason.split(';')[0]}` };
  return { resources: [c.conv, ...(c.also ?? [])].flatMap((x) => [x.patient, ...x.resources]), note: '' };
}

function measure(file: string): Row {
  const dir = corpusDir(SUB)!;
  const { text } = decodeHl7(fs.readFileSync(path.join(dir, file)), 'utf-8', facilityCharset);
  const bundle = JSON.parse(fs.readFileSync(path.join(dir, file.replace(/\.hl7$/, '.expected.json')), 'utf8')) as Bundle;
  const expected = facts((bundle.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : [])));
  const mine = ours(text);
  const m = carried(expected, facts(mine.resources));
  return { message: file.replace(/\.hl7$/, ''), structure: parseHl7(text).structure, expected: expected.length, carried: m.carried, missing: m.missing, note: mine.note };
}

const pct = (a: number, b: number): string => (b ? `${((100 * a) / b).toFixed(1)}%` : '-');

function table(rows: Row[]): string {
  const lines = [['message', 'structure', 'expected', 'carried', '%', ''], ...rows.map((r) => [r.message, r.structure, String(r.expected), String(r.carried), pct(r.carried, r.expected), r.note])];
  const total = rows.reduce((s, r) => ({ e: s.e + r.expected, c: s.c + r.carried }), { e: 0, c: 0 });
  lines.push(['total', '', String(total.e), String(total.c), pct(total.c, total.e), '']);
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  return lines.map((l) => l.map((x, i) => (i >= 2 && i <= 4 ? x.padStart(widths[i]) : x.padEnd(widths[i]))).join('  ').trimEnd()).join('\n');
}

describe('facts() normalises what two converters say differently', () => {
  const practitioner = (id: string, system: string): Practitioner => ({ resourceType: 'Practitioner', id, identifier: [{ system, value: 'D-7' }], name: [{ family: 'Tamm', given: ['Jaan'], prefix: ['Dr.'] }] });
  const encounter = (practitionerId: string, start: string): Encounter => ({
    resourceType: 'Encounter',
    id: `e-${practitionerId}`,
    status: 'finished',
    class: { code: 'IMP' },
    period: { start },
    participant: [{ individual: { reference: `Practitioner/${practitionerId}` } }],
  });
  const theirs: Resource[] = [
    { resourceType: 'Patient', id: 'a', identifier: [{ system: 'http://example.com/x', value: 'PAT-1' }], name: [{ family: 'METS', given: ['MARI'] }], telecom: [{ value: '(555) 555-2004' }] } as Patient,
    practitioner('p1', 'http://example.com/y'),
    encounter('p1', '2015-02-09T15:54:19+05:30'),
  ];
  const mine: Resource[] = [
    { resourceType: 'Patient', id: 'b', identifier: [{ system: 'urn:care-gateway:assigner:X', value: 'PAT-1' }], name: [{ family: 'Mets', given: ['Mari'], suffix: ['MD'] }], telecom: [{ value: '5555552004' }] } as Patient,
    practitioner('p2', 'urn:oid:1.2.3'),
    encounter('p2', '2015-02-09T11:34+01:10'),
  ];

  test('identifiers by value, names lower-cased without affixes, phones by digits, references by what they point at', () => {
    expect(facts(theirs)).toEqual(
      expect.arrayContaining([
        { kind: 'Patient.identifier', value: 'PAT-1' },
        { kind: 'Patient.name', value: 'mets mari' },
        { kind: 'Patient.telecom', value: '5555552004' },
        { kind: 'Encounter.participant', value: 'tamm jaan' },
        { kind: 'Encounter.period.start', value: '2015-02-09T15:54+05:30' },
      ]),
    );
    const m = carried(facts(theirs), facts(mine));
    expect(m.missing).toEqual([]);
    expect(m.carried).toBe(facts(theirs).length);
  });

  test('dateTimes: seconds dropped, the same instant in another offset and a date-only value match; another minute does not', () => {
    const start = (v: string) => [{ kind: 'Encounter.period.start', value: facts([encounter('p', v)]).find((f) => f.kind === 'Encounter.period.start')!.value }];
    const expected = start('2015-02-09T11:34:19+01:10');
    expect(carried(expected, start('2015-02-09T11:34+01:10')).carried).toBe(1); // seconds vs none: the minute both share
    expect(carried(expected, start('2015-02-09T15:54:00+05:30')).carried).toBe(1); // same instant, another offset
    expect(carried(expected, start('2015-02-09T11:34:00+02:00')).carried).toBe(1); // same wall-clock minute: zone ignored
    expect(carried(expected, start('2015-02-09')).carried).toBe(1); // only the date on one side
    expect(carried(expected, start('2015-02-09T11:35:19+01:10')).carried).toBe(0);
    expect(carried(expected, start('2015-02-10')).carried).toBe(0);
  });

  test('names: the same person when one name is the other with given names left off, never by family alone', () => {
    expect(sameValue('Patient.name', 'everyman adam a', 'everyman adam a addsm')).toBe(true); // XPN-15 appended there
    expect(sameValue('Patient.name', 'everyman', 'everyman adam')).toBe(false);
    expect(sameValue('Patient.name', 'everyman adam', 'everyman adamson')).toBe(false);
    expect(sameValue('Patient.identifier', 'PAT-1', 'PAT-1 X')).toBe(false);
  });

  test('a multiset: a fact expected twice and carried once counts once; other values and kinds do not match', () => {
    const f = (kind: string, value: string): Fact => ({ kind, value });
    const m = carried([f('Condition.code', 'I63.9'), f('Condition.code', 'I63.9'), f('Procedure.code', 'X')], [f('Condition.code', 'I63.9'), f('Observation.code', 'X')]);
    expect(m).toEqual({ carried: 1, missing: [f('Condition.code', 'I63.9'), f('Procedure.code', 'X')] });
  });
});

describeCorpus(SUB, 'fidelity to Microsoft FHIR-Converter’s expected outputs', () => {
  const files = corpusFiles(SUB, '.hl7').filter((f) => fs.existsSync(path.join(corpusDir(SUB)!, f.replace(/\.hl7$/, '.expected.json'))));

  test(`our conversions carry at least ${FLOOR * 100}% of the facts their expected Bundles carry`, () => {
    expect(files.length).toBeGreaterThan(0);
    const rows = files.map(measure);
    let out = `fidelity to Microsoft FHIR-Converter (${SUB})\n${table(rows)}`;
    if (process.env.FIDELITY_VERBOSE === '1') {
      for (const r of rows.filter((x) => x.missing.length)) out += `\n\n${r.message}: missing ${r.missing.length}\n${r.missing.map((f) => `  ${f.kind} = ${f.value}`).join('\n')}`;
    }
    console.log(out);
    const total = rows.reduce((s, r) => ({ e: s.e + r.expected, c: s.c + r.carried }), { e: 0, c: 0 });
    expect(total.c / total.e).toBeGreaterThanOrEqual(FLOOR);
  });
});
