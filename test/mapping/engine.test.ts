/**
 * The mapping engine: mapping files are data, compiled once; a new segment needs a file, not code; merges,
 * cancellations, ROL roles and unsupported messages. V2-to-FHIR IG message maps ADT_A01/A09, ROL (table 0443).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Encounter, Patient } from '@medplum/fhirtypes';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { convertHl7 } from '../../src/mapping/hl7v2/convert.js';
import { loadMappings } from '../../src/mapping/hl7v2/load.js';
import { mappingsDir } from '../../src/paths.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { deterministicId, SYSTEMS } from '../../src/fhir/identifiers.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

const MSH = (type: string) => `MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|GW|TARTU|20261110120000||${type}|C1|P|2.5.1`;

test('mapping files load once and are reused', () => {
  expect(loadMappings()).toBe(loadMappings());
});

test('a local Z-segment is mapped by adding two mapping files, no code', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-mappings-'));
  fs.cpSync(mappingsDir(), dir, { recursive: true });
  // resources/CareNeed.yaml: ZCN|set id|active Y/N|need text → Flag
  fs.writeFileSync(
    path.join(dir, 'hl7v2/resources/CareNeed.yaml'),
    [
      'resourceType: Flag',
      'id: { key: [ZCN-3.1], scope: patient }',
      'elements:',
      '  status: { from: ZCN-2.1, equals: Y, then: active }',
      '  code: { from: ZCN-3, type: CWE }',
      '  subject: { ref-to: Patient }',
    ].join('\n'),
  );
  const a03 = path.join(dir, 'hl7v2/messages/ADT_A03.yaml');
  fs.appendFileSync(a03, '  - { rule: CareNeed, segment: ZCN, repeat: true }\n');
  const text = `${eeDischarge()}\rZCN|1|Y|KODU^Koduteenuse vajadus^CARE_GW`;
  expect(convertHl7(parseHl7(text)).unused).toContain('ZCN'); // the project's mappings do not know ZCN
  const c = convertHl7(parseHl7(text), dir);
  const flag = c.resources.find((r) => r.resourceType === 'Flag');
  expect(flag).toMatchObject({ status: 'active', code: { coding: [{ code: 'KODU', display: 'Koduteenuse vajadus' }] }, subject: { reference: `Patient/${c.patient.id}` } });
  expect(c.unused).not.toContain('ZCN');
});

test('a typo in a mapping file fails at load, naming the file, the line and the element', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-mappings-'));
  fs.cpSync(mappingsDir(), dir, { recursive: true });
  const file = path.join(dir, 'hl7v2/resources/Patient.yaml');
  fs.appendFileSync(file, '  active: { form: PID-1 }\n');
  const line = fs.readFileSync(file, 'utf8').trimEnd().split('\n').length;
  expect(() => loadMappings(dir)).toThrow(`mappings/hl7v2/resources/Patient.yaml:${line}: elements.active.form: unknown key "form"`);
});

test('ADT^A11 cancels the encounter (Event[EncounterStatus] A11 → cancelled)', () => {
  const text = eeDischarge({ trigger: 'A01' }).replace('ADT^A01^ADT_A01', 'ADT^A11^ADT_A09');
  const c = convertHl7(parseHl7(text));
  expect(c.resources.find((r): r is Encounter => r.resourceType === 'Encounter')?.status).toBe('cancelled');
});

test('ADT^A40 merge: MRG patient replaced-by the survivor, survivor replaces it', () => {
  const text = [
    MSH('ADT^A40^ADT_A39'),
    'EVN|A40|20261110120000',
    'PID|1||36805280109^^^EE^NI||Kask^Mari||19680528|F', // survivor
    'MRG|H-777^^^ELVA_HAIGLA^MR', // MRG-1: the retired hospital record
  ].join('\r');
  const c = convertHl7(parseHl7(text));
  const retiredId = deterministicId('Patient', 'https://fhir.ee/sid/pid/est/prn/90006399', 'H-777');
  expect(c.merge?.retiredPatientId).toBe(retiredId);
  const retired = c.resources.find((r): r is Patient => r.resourceType === 'Patient' && r.id === retiredId)!;
  expect(retired.active).toBe(false);
  expect(retired.link).toEqual([{ type: 'replaced-by', other: { reference: `Patient/${c.patient.id}` } }]);
  expect(c.patient.link).toEqual([{ type: 'replaces', other: { reference: `Patient/${retiredId}` } }]);
  expect(c.patient.identifier?.[0]).toEqual({ system: SYSTEMS.isikukood, value: '36805280109', type: expect.anything() });
});

test('ROL: PP → generalPractitioner, other roles → careTeamCandidates with Practitioner resources', () => {
  const text = [
    eeDischarge(),
    'ROL|1|AD|PP^Primary Care Provider^HL70443|D22222^Ilves^Kadri^^^Dr^^^TAM|20200101',
    'ROL|2|AD|CP^Consulting Provider^HL70443|N33333^Õun^Ülle^^^^^^TAM|20261101',
  ].join('\r');
  const c = convertHl7(parseHl7(text));
  const ids = (code: string) => c.resources.find((r) => r.resourceType === 'Practitioner' && r.identifier?.[0].value === code)?.id;
  expect(c.patient.generalPractitioner?.map((g) => g.reference)).toContain(`Practitioner/${ids('D22222')}`);
  expect(c.careTeamCandidates).toHaveLength(1);
  expect(c.careTeamCandidates[0]).toMatchObject({ member: { reference: `Practitioner/${ids('N33333')}` }, start: '2026-11-01' });
});

test.each([
  ['ORM^O01^ORM_O01', 'MSH-9'],
  ['ADT^A17^ADT_A17', 'MSH-9'],
  ['ADT^A12^ADT_A09', 'MSH-9.2'],
])('%s is refused as unsupported at %s', (type, where) => {
  let err: unknown;
  try {
    convertHl7(parseHl7(`${MSH(type)}\rPID|1||38001010015^^^EE^NI`));
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(OutcomeError);
  expect((err as OutcomeError).category).toBe('unsupported');
  expect((err as OutcomeError).outcome.issue[0].expression).toEqual([where]);
});

test('foreign assigning authorities: an ISO OID becomes urn:oid, a bare name a care-gateway urn', () => {
  const text = [MSH('ADT^A08^ADT_A01'), 'EVN|A08|20261110120000', 'PID|1||123^^^HOSP&2.16.840.1.113883.19.5&ISO^MR~456^^^ACME^MR||Doe^John||19700101|M'].join('\r');
  const c = convertHl7(parseHl7(text));
  expect(c.patient.identifier?.map((i) => i.system)).toEqual(['urn:oid:2.16.840.1.113883.19.5', 'urn:care-gateway:assigner:ACME']);
  expect(c.patient.id).toBe(deterministicId('Patient', 'urn:oid:2.16.840.1.113883.19.5', '123'));
});

test.each([
  ['ADT', 'A01', 'ADT_A01'],
  ['ADT', 'A04', 'ADT_A01'],
  ['ADT', 'A08', 'ADT_A01'],
  ['ADT', 'A13', 'ADT_A01'],
  ['ADT', 'A05', 'ADT_A05'],
  ['ADT', 'A14', 'ADT_A05'],
  ['ADT', 'A28', 'ADT_A05'],
  ['ADT', 'A31', 'ADT_A05'],
  ['ADT', 'A02', 'ADT_A02'],
  ['ADT', 'A03', 'ADT_A03'],
  ['ADT', 'A11', 'ADT_A09'],
  ['ADT', 'A40', 'ADT_A39'],
  ['REF', 'I12', 'REF_I12'],
  ['PPR', 'PC1', 'PPR_PC1'],
])('table 0354: %s^%s without MSH-9.3 is converted as %s', (type, trigger, structure) => {
  const pid = 'PID|1||38001010015^^^EE^NI||Tamm^Mari||19800101|F';
  const rest = type === 'ADT' && trigger === 'A40' ? `${pid}\rMRG|H-9^^^ELVA_HAIGLA^MR` : `${pid}\rPV1|1|I`;
  expect(convertHl7(parseHl7(`MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|GW|TARTU|20261110120000||${type}^${trigger}|C1|P|2.3\r${rest}`)).event.structure).toBe(structure);
});

test('MSH-9.3 naming a structure without a message file (ADT^A04^ADT_A04) is converted by its trigger', () => {
  const c = convertHl7(parseHl7(`${MSH('ADT^A04^ADT_A04')}\rPID|1||38001010015^^^EE^NI||Tamm^Mari||19800101|F\rPV1|1|O`));
  expect(c.event).toMatchObject({ trigger: 'A04', structure: 'ADT_A01' });
});

test('what a structure leaves on purpose is reported with why; what it has not mapped yet, as a gap', () => {
  const c = convertHl7(parseHl7(`${eeDischarge()}\rSFT|Elva HIS|4.2\rZZZ|1`));
  const said = (where: string) => c.issues.find((i) => i.expression?.[0] === where)?.diagnostics;
  expect(said('SFT')).toMatch(/^SFT is left on purpose: the sending software/);
  expect(said('ZZZ')).toBe('ZZZ was not mapped');
  expect(c.unused).toEqual(expect.arrayContaining(['SFT', 'ZZZ']));
});

test('a message file raises a flag from a Z-segment field, and the coordination rule that tests the flag applies', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-mappings-'));
  fs.cpSync(mappingsDir(), dir, { recursive: true });
  const a03 = path.join(dir, 'hl7v2/messages/ADT_A03.yaml');
  fs.writeFileSync(a03, fs.readFileSync(a03, 'utf8').replace('\nresources:', '\nflags:\n  care-need: { field: ZCN-2.1, in: [Y] }\nresources:'));
  const home = eeDischarge({ disposition: '01', diagnosis: 'J18.9' }); // pneumonia, home: no care-need condition
  const flagged = convertHl7(parseHl7(`${home}\rZCN|1|Y|KODU^Koduteenuse vajadus^CARE_GW`), dir);
  const unflagged = convertHl7(parseHl7(`${home}\rZCN|1|N|KODU^Koduteenuse vajadus^CARE_GW`), dir);
  expect(flagged.flags).toEqual(['care-need']);
  expect(unflagged.flags).toEqual([]);
  expect(flagged.unused).not.toContain('ZCN'); // the flag read it
  const { ruleBook } = await import('../../src/careplan/rules.js');
  const assessment = ruleBook().rules.find((r) => r.id === 'social-care-needs-assessment')!;
  const facts = (c: typeof flagged) => ({ dispositionCodes: ['01'], conditionCodes: ['J18.9'], segments: [] as string[], flags: c.flags, deceased: false });
  expect([assessment.applies(facts(flagged)), assessment.applies(facts(unflagged))]).toEqual([true, false]);
});

test('a ROL after PV1 is also an Encounter participant (part of the nearest Encounter before it); a ROL before PV1 is not', () => {
  const rol = (n: number, code: string) => `ROL|${n}|AD|${code}^Role^HL70443|${code === 'PP' ? 'D22222' : 'N33333'}^Arst^Anne^^^Dr^^^TAM|20261101`;
  const [head, ...rest] = eeDischarge().split('\r');
  const pv1 = rest.findIndex((s) => s.startsWith('PV1'));
  const text = [head, ...rest.slice(0, pv1), rol(1, 'PP'), rest[pv1], rol(2, 'CP'), ...rest.slice(pv1 + 1)].join('\r');
  const c = convertHl7(parseHl7(text));
  const enc = c.resources.find((r): r is Encounter => r.resourceType === 'Encounter')!;
  const nurse = c.resources.find((r) => r.resourceType === 'Practitioner' && (r as { identifier?: { value?: string }[] }).identifier?.[0].value === 'N33333')!;
  const fromRol = (enc.participant ?? []).filter((p) => p.type?.[0].coding?.[0].system === 'http://terminology.hl7.org/CodeSystem/v2-0443');
  expect(fromRol).toEqual([expect.objectContaining({ individual: expect.objectContaining({ reference: `Practitioner/${nurse.id}` }), period: { start: '2026-11-01' } })]);
});

describe('route and id keys for a segment that says several things at once', () => {
  /** a copy of the mappings with a local ZDX segment (set id | needs, repeating | assessed Y/N | assessor) routed in ADT_A03 */
  function withZdx(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-mappings-'));
    fs.cpSync(mappingsDir(), dir, { recursive: true });
    const rule = (name: string, id: string) =>
      fs.writeFileSync(path.join(dir, `hl7v2/resources/${name}.yaml`), ['resourceType: Flag', `id: ${id}`, 'elements:', '  status: { value: active }', '  code: { from: ZDX-2, type: CWE }', '  subject: { ref-to: Patient }'].join('\n'));
    rule('CareNeedEach', '{ key: [ZDX-2.1], scope: patient, tag: care-need }');
    rule('CareNeedSummary', '{ scope: patient, tag: care-need-summary }');
    fs.appendFileSync(
      path.join(dir, 'hl7v2/messages/ADT_A03.yaml'),
      [
        '  - { rule: CareNeedEach, segment: ZDX, each: ZDX-2, when: { any: [{ field: ZDX-3.1, in: [Y], otherwise: warn }, { field: ZDX-4.1, present: true }] } }',
        '  - { rule: CareNeedSummary, segment: ZDX, when: { field: ZDX-3.1, in: [Y] } }',
        '',
      ].join('\n'),
    );
    return dir;
  }
  const flags = (c: ReturnType<typeof convertHl7>) => c.resources.filter((r) => r.resourceType === 'Flag') as { id?: string; code: { coding?: { code?: string }[] } }[];

  test('each: one resource per repetition of the field (an empty repetition is none); any: one of the conditions holds', () => {
    const dir = withZdx();
    const c = convertHl7(parseHl7(`${eeDischarge()}\rZDX|1|KODU^Koduhooldus^L~~TRANSP^Transport^L|Y`), dir);
    const each = flags(c).filter((f) => f.id !== deterministicId('Flag', c.patientId, 'care-need-summary'));
    expect(each.map((f) => f.code.coding?.[0].code)).toEqual(['KODU', 'TRANSP']);
    // the assessment flag N, but an assessor named: the second alternative of `any` holds
    const byAssessor = convertHl7(parseHl7(`${eeDischarge()}\rZDX|1|KODU^Koduhooldus^L|N|N33333^Õde^Anu`), dir);
    expect(flags(byAssessor).map((f) => f.code.coding?.[0].code)).toEqual(['KODU']); // and no summary: ZDX-3 is not Y
    expect(byAssessor.issues.filter((i) => i.severity === 'warning')).toEqual([]); // N is a value the route was asked about
  });

  test('otherwise: warn — a value the condition does not accept is said, the field counts as read, nothing is made', () => {
    const c = convertHl7(parseHl7(`${eeDischarge()}\rZDX|1|KODU^Koduhooldus^L|X`), withZdx());
    expect(flags(c)).toEqual([]);
    expect(c.issues.filter((i) => i.expression?.[0] === 'ZDX-3.1').map((i) => [i.severity, i.diagnostics])).toEqual([['warning', 'ZDX-3.1: "X" is not one of Y; no CareNeedEach made']]);
    expect(c.unused).not.toContain('ZDX');
    expect(c.unused).not.toContain('ZDX-3');
  });

  test('tag: the same key in two rules of one type makes two resources; a tag without key one per patient, whatever the segment says', () => {
    const dir = withZdx();
    const c = convertHl7(parseHl7(`${eeDischarge()}\rZDX|1|KODU^Koduhooldus^L|Y`), dir);
    const again = convertHl7(parseHl7(`${eeDischarge()}\rZDX|2|TRANSP^Transport^L|Y`), dir);
    const summary = (x: typeof c) => flags(x).find((f) => f.id === deterministicId('Flag', x.patientId, 'care-need-summary'));
    expect(summary(c)).toBeDefined();
    expect(summary(again)?.id).toBe(summary(c)?.id);
    expect(flags(c).find((f) => f.id === deterministicId('Flag', c.patientId, 'care-need', 'KODU'))).toBeDefined();
  });

  test('a condition with both field and any, or neither, fails at load', () => {
    const dir = withZdx();
    const a03 = path.join(dir, 'hl7v2/messages/ADT_A03.yaml');
    fs.appendFileSync(a03, '  - { rule: CareNeedEach, segment: ZDX, when: { field: ZDX-3.1, any: [{ field: ZDX-4.1, present: true }] } }\n');
    expect(() => loadMappings(dir)).toThrow(/ADT_A03\.yaml/);
  });
});
