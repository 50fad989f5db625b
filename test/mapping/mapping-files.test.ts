/**
 * Mapping typos stop the start with file, line and path: broken copies of the project's real mapping files, one
 * mistake each, loaded as the gateway loads them. And the schemas' lists of values are the code's lists.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadMappings } from '../../src/mapping/hl7v2/load.js';
import { CONVERTER_TYPES } from '../../src/mapping/hl7v2/load.js';
import { PLAN_EVENTS } from '../../src/county/contribution.js';
import { mappingsDir } from '../../src/paths.js';
import { bundledKindOf, checkedFileCache, parseDataFile } from '../../src/data-file.js';

/** A copy of mappings/ with `edit` applied to one file; returns the folder and the 1-based line the edit is on. */
function brokenCopy(file: string, edit: (text: string) => string): { dir: string; lineOf: (needle: string) => number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-broken-'));
  fs.cpSync(mappingsDir(), dir, { recursive: true });
  const p = path.join(dir, file);
  const text = edit(fs.readFileSync(p, 'utf8'));
  fs.writeFileSync(p, text);
  return { dir, lineOf: (needle) => text.split('\n').findIndex((l) => l.includes(needle)) + 1 };
}

test.each([
  ['a misspelt plan event', 'hl7v2/messages/ADT_A03.yaml', (t: string) => t.replace('plan: discharge,', 'plan: dischrage,'), 'dischrage', /ADT_A03\.yaml:L: events\.A03\.plan: must be one of "discharge"/],
  ['an unknown route key', 'hl7v2/messages/ADT_A01.yaml', (t: string) => t.replace('segment: AL1, repeat: true', 'segment: AL1, repeats: true'), 'repeats', /ADT_A01\.yaml:L: resources\.\d+\.repeats: unknown key "repeats"/],
  ['a route to a rule that does not exist', 'hl7v2/messages/ADT_A01.yaml', (t: string) => t.replace('rule: AllergyIntolerance', 'rule: Allergy'), '', /messages\/ADT_A01\.yaml: resources\.\d+\.rule: no resource rule "Allergy"/],
  ['an unknown datatype', 'hl7v2/resources/Encounter.yaml', (t: string) => t.replace('type[]: { from: PV1-4, type: CWE }', 'type[]: { from: PV1-4, type: CWX }'), 'CWX', /Encounter\.yaml:L: elements\.type\[\]\.type: must be one of "string"/],
  ['a location that is not one', 'hl7v2/resources/Encounter.yaml', (t: string) => t.replace('period.start: { from: PV1-44.1', 'period.start: { from: PV1.44'), 'PV1.44', /Encounter\.yaml:L: elements\.period\.start\.from: must match pattern/],
  ['a code table without its system', 'codes/marital-status.yaml', (t: string) => t.replace(/^system: .*$/m, ''), '', /codes\/marital-status\.yaml:\d+: "system" is required|marital-status\.yaml: "system" is required/],
  ['a registry code of seven digits', 'facilities.yaml', (t: string) => t.replace('registryCode: "90006399", name: Elva Haigla (test fixture) }', 'registryCode: "9000639", name: Elva Haigla (test fixture) }'), '"9000639"', /facilities\.yaml:L: facilities\.ELVA_HAIGLA\.registryCode: must match pattern/],
  ['a key written twice', 'hl7v2/resources/Patient.yaml', (t: string) => t.replace('birthDate: { from: PID-7.1, type: date }', 'birthDate: { from: PID-7.1, type: date }\n  birthDate: { from: PID-7.1 }'), 'birthDate: { from: PID-7.1 }', /Patient\.yaml:L: Map keys must be unique/],
])('%s stops the load, naming file, line and path', (_what, file, edit, needle, expected) => {
  const { dir, lineOf } = brokenCopy(file, edit);
  const pattern = new RegExp(expected.source.replace(':L:', `:${needle ? lineOf(needle) : '\\d+'}:`));
  expect(() => loadMappings(dir)).toThrow(pattern);
});

test('the schemas know the plan events and datatypes the code knows, no more and no fewer', () => {
  const schema = (kind: string) => JSON.parse(fs.readFileSync(path.join(mappingsDir(), 'schema', `${kind}.schema.json`), 'utf8'));
  const message = schema('hl7v2-message');
  expect(message.properties.events.additionalProperties.properties.plan.enum).toEqual([...PLAN_EVENTS]);
  expect(schema('hl7v2-resource').definitions.element.properties.type.enum).toEqual([...CONVERTER_TYPES]);
});

test('every mapping file of the project passes its schema', () => {
  expect(() => loadMappings(mappingsDir(), undefined)).not.toThrow();
});

test('the files the build checked read back as parsing and checking them gives, and every data file is among them', () => {
  // (the test run builds first when a source or mapping is newer than the build: test/helpers/global-setup.ts)
  const walk = (dir: string): string[] => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
  const files = walk(mappingsDir())
    .map((f) => ({ f, rel: path.relative(mappingsDir(), f).split(path.sep).join('/') }))
    .filter(({ rel }) => bundledKindOf(rel));
  expect(files.length).toBeGreaterThan(60);
  expect(checkedFileCache().size).toBe(files.length);
  for (const { f, rel } of files) {
    const text = fs.readFileSync(f, 'utf8');
    expect([rel, parseDataFile(text, bundledKindOf(rel)!, rel)]).toEqual([rel, parseDataFile(text, bundledKindOf(rel)!, rel, { fresh: true })]);
  }
});

describe('the other mapping files: a typo in a copy of the real file names file, line and path', () => {
  const real = (file: string) => fs.readFileSync(path.join(mappingsDir(), file), 'utf8');
  const lineOf = (text: string, needle: string) => text.split('\n').findIndex((l) => l.includes(needle)) + 1;
  test.each([
    ['careplan/rules.yaml', 'careplan-rules', (t: string) => t.replace('on: discharge\n', 'on: dischrage\n'), 'dischrage', /rules\.yaml:L: rules\.0\.on: must be one of "discharge"/],
    ['careplan/rules.yaml', 'careplan-rules', (t: string) => t.replace('performer: general-practitioner', 'performer: family-doctor'), 'family-doctor', /rules\.yaml:L: rules\.0\.add\.0\.performer: must be one of/],
    ['social/elva.yaml', 'social-source', (t: string) => t.replace('records: otsused', 'record: otsused'), 'record: otsused', /elva\.yaml:L: record: unknown key "record"/],
    ['social/elva.yaml', 'social-source', (t: string) => t.replace('  decisionDate: kuupaev', '  decisonDate: kuupaev'), 'decisonDate', /elva\.yaml:L: fields\.decisonDate: unknown key "decisonDate" \(known: decisionId, /],
    ['directory/municipalities.yaml', 'directory', (t: string) => t.replace('registryCode: "77000170"', 'registryCode: "7700017"'), '"7700017"', /municipalities\.yaml:L: municipalities\.0171\.registryCode: must match pattern/],
    ['hl7v2/common.yaml', 'hl7v2-common', (t: string) => t.replace('LN: http://loinc.org', 'LN: loinc.org'), 'LN: loinc.org', /common\.yaml:L: codingSystems\.LN: must match pattern/],
    ['hl7v2/common.yaml', 'hl7v2-common', (t: string) => t.replace('eventTime: [EVN-6.1,', 'eventTime: [EVN6.1,'), 'EVN6.1', /common\.yaml:L: eventTime\.0: must match pattern/],
    ['fhir/message-events.yaml', 'fhir-message-events', (t: string) => t.replace('plan: referral', 'plan: referal'), 'referal', /message-events\.yaml:L: events\.\d+\.plan: must be one of/],
  ] as const)('%s (%s)', (file, kind, edit, needle, expected) => {
    const text = edit(real(file));
    expect(text).not.toBe(real(file)); // the edit found its place in the real file
    const pattern = new RegExp(expected.source.replace(':L:', `:${lineOf(text, needle)}:`));
    expect(() => parseDataFile(text, kind, `mappings/${file}`)).toThrow(pattern);
    expect(() => parseDataFile(real(file), kind, `mappings/${file}`)).not.toThrow();
  });
});
