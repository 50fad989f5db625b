/**
 * Every HL7 v2 message of the shared corpus (CG_CORPUS_DIR/hl7v2, real messages from public projects) goes
 * through decode → parse → map: supported types yield resources that pass our validator (R4 JSON schema +
 * StructureDefinition rules) and @medplum/core's independent validator with no errors; unsupported types are
 * refused with a clear 'unsupported' error. Golden assertions pin the fields that matter, read from the messages.
 * Skipped without the shared corpus (CG_CORPUS_DIR).
 */
import fs from 'node:fs';
import path from 'node:path';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import type { Bundle, DocumentReference, Encounter, Patient, Practitioner, RelatedPerson, Resource, ServiceRequest, Observation, Condition } from '@medplum/fhirtypes';
import { decodeHl7 } from '../../src/hl7v2/decode.js';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { convertHl7, type Conversion } from '../../src/mapping/hl7v2/convert.js';
import { validateResource } from '../../src/fhir/validate.js';
import { readDefinitions } from '../../src/fhir/definitions.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { corpusDir, corpusFiles, describeCorpus } from '../helpers/corpus.js';

const ROOT = corpusDir('hl7v2') ?? '';
const UNSUPPORTED = new Set(['hapi-hl7v2/example_oml_o21-multi.hl7']);

/** A file may hold several messages: split at each MSH. */
function messagesIn(file: string): string[] {
  const { text } = decodeHl7(fs.readFileSync(path.join(ROOT, file)), 'utf-8');
  return text.split(/\r(?=MSH\|)/);
}

function convert(file: string, i = 0): Conversion {
  return convertHl7(parseHl7(messagesIn(file)[i]));
}

const all = (c: Conversion): Resource[] => [c.patient, ...c.resources];
const of = <T extends Resource>(c: Conversion, type: string): T[] => all(c).filter((r) => r.resourceType === type) as T[];

describeCorpus('hl7v2', 'the HL7 v2 messages of the shared corpus', () => {
  const files = corpusFiles('hl7v2', '.hl7');

  beforeAll(() => {
    indexStructureDefinitionBundle(readDefinitions<Bundle>('profiles-types.json'));
    indexStructureDefinitionBundle(readDefinitions<Bundle>('profiles-resources.json'));
  });

  test('the corpus is there', () => {
    expect(files.length).toBeGreaterThanOrEqual(45);
  });

  describe.each(files.filter((f) => !UNSUPPORTED.has(f)))('%s', (file) => {
    test('converts to resources that both validators accept', () => {
      for (const [i] of messagesIn(file).entries()) {
        const c = convert(file, i);
        expect(c.issues.filter((x) => x.severity === 'error')).toEqual([]);
        for (const r of all(c)) {
          const ours = validateResource(r).filter((x) => x.severity === 'error');
          expect({ resource: `${r.resourceType}/${r.id}`, issues: ours }).toEqual({ resource: `${r.resourceType}/${r.id}`, issues: [] });
          let theirs: unknown[] = [];
          try {
            theirs = medplumValidate(r).filter((x) => x.severity === 'error');
          } catch (e) {
            theirs = [(e as Error).message];
          }
          expect({ resource: `${r.resourceType}/${r.id}`, medplum: theirs }).toEqual({ resource: `${r.resourceType}/${r.id}`, medplum: [] });
        }
      }
    });

    test('converting twice gives the same ids (re-sent messages land on the same resources)', () => {
      const ids = (c: Conversion) => all(c).map((r) => `${r.resourceType}/${r.id}`);
      expect(ids(convert(file))).toEqual(ids(convert(file)));
    });
  });

  test.each([...UNSUPPORTED])('%s is refused as unsupported, naming MSH-9', (file) => {
    let err: unknown;
    try {
      convert(file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OutcomeError);
    expect((err as OutcomeError).category).toBe('unsupported');
    expect((err as OutcomeError).outcome.issue[0].expression).toEqual(['MSH-9']);
  });

  describe('golden fields', () => {
    test('ADT^A03 discharge (Microsoft ADT-A03-01): finished encounter with end, disposition and participants', () => {
      const c = convert('microsoft-fhir-converter/ADT-A03-01.hl7');
      expect(c.event).toMatchObject({ trigger: 'A03', plan: 'discharge' });
      const [enc] = of<Encounter>(c, 'Encounter');
      expect(enc.status).toBe('finished'); // A03 → finished
      expect(enc.period?.end).toBeDefined(); // PV1-45
      expect(enc.participant?.map((p) => p.type?.[0].coding?.[0].code)).toEqual(['ATND', 'REF', 'CON', 'ADM', 'PART', 'REF', 'PP', 'PP']); // PV1-7/8/9/17/52, PV2-13, the ROLs after PV1
      expect(c.patient.name?.[0]).toMatchObject({ family: 'EVERYMAN', given: ['ADAM', 'A'] }); // PID-5 with &-subcomponents
      expect(c.patient.deceasedDateTime).toBe('2008-08-25T11:16:30+01:15'); // PID-29, offset kept
      expect(c.patient.deceasedBoolean).toBeUndefined(); // deceased[x] holds one value
      expect(c.patient.generalPractitioner?.length).toBeGreaterThanOrEqual(2); // PD1-4 and ROL PP
    });

    test('UTF-8 umlauts without MSH-18 (IPF msg-01-utf8) survive', () => {
      const c = convert('ipf/msg-01-utf8.hl7');
      expect(c.patient.name?.[0]).toEqual({ family: 'Nächname', given: ['Vörname'] }); // PID-5
      expect(c.patient.address?.[0].line).toEqual(['Blöhplatz 1']); // PID-11
      const [rp] = of<RelatedPerson>(c, 'RelatedPerson');
      expect(rp.telecom?.map((t) => t.value)).toEqual(['333-4444', '333-5555']); // NK1-5 repeats
    });

    test('ADT^A40 (IPF iti8-a40): the MRG patient is retired, replaced-by the PID patient', () => {
      const c = convert('ipf/iti8-a40.hl7');
      expect(c.merge?.retiredPatientId).toBeDefined();
      const retired = of<Patient>(c, 'Patient').find((p) => p.id === c.merge!.retiredPatientId)!;
      expect(retired.active).toBe(false);
      expect(retired.link).toEqual([{ type: 'replaced-by', other: { reference: `Patient/${c.patient.id}` } }]);
      expect(retired.identifier?.map((i) => i.value)).toContain('305010'); // MRG-1
    });

    test('MDM^T02 with a 70 KB base64 document (IPF camel-msg-02) keeps the whole document', () => {
      const c = convert('ipf/camel-msg-02-mdm-t02-large.hl7');
      const [doc] = of<DocumentReference>(c, 'DocumentReference');
      const att = doc.content[0].attachment;
      expect(att.contentType).toBe('text/html');
      expect(Buffer.from(att.data!, 'base64').toString('utf8')).toMatch(/^<!DOCTYPE html/);
      expect(att.size).toBeGreaterThan(40_000);
    });

    test('REF^I12 (Microsoft REF-I12-01): a referral ServiceRequest with a Task', () => {
      const c = convert('microsoft-fhir-converter/REF-I12-01.hl7');
      const [sr] = of<ServiceRequest>(c, 'ServiceRequest');
      expect(sr).toMatchObject({ intent: 'order', subject: { reference: `Patient/${c.patient.id}` } });
      expect(of(c, 'Task')).toHaveLength(1);
    });

    test('ORU^R01 text reports: lines without OBX-3 take the order’s code (LinuxForHealth multiline)', () => {
      const c = convert('linuxforhealth-hl7v2-fhir-converter/ORU-multiline-short.hl7');
      const obs = of<Observation>(c, 'Observation');
      expect(obs).toHaveLength(3); // three TX lines
      expect(obs.every((o) => o.code.coding?.[0].code === '1487')).toBe(true); // OBR-4
    });

    test('PPR^PC1 (Microsoft PC1-Problem-Add): the problem becomes a problem-list Condition', () => {
      const c = convert('microsoft-fhir-converter/PC1-Problem-Add-v2.3.1.hl7');
      const [cond] = of<Condition>(c, 'Condition');
      expect(cond.code?.coding?.[0]).toMatchObject({ code: '596.5', system: 'http://hl7.org/fhir/sid/icd-9-cm' }); // PRB-3
      expect(cond.category?.[0].coding?.[0].code).toBe('problem-list-item');
    });

    test('ADT^A01 (Microsoft ADT-A01-01): identifiers, name, birth date, sex, GP, next of kin, pre-admit class', () => {
      const c = convert('microsoft-fhir-converter/ADT-A01-01.hl7');
      // PID-3 PATID1234^5^M11^test1&2.16.1&HCD^MR: HCD is not ISO, so the system names the assigner
      expect(c.patient.identifier?.[0]).toMatchObject({ system: 'urn:care-gateway:assigner:test1', value: 'PATID1234', type: { coding: [{ code: 'MR' }] } });
      expect(c.patient.name?.[0]).toMatchObject({ family: 'EVERYMAN', given: ['ADAM', 'A'], prefix: ['Dr.'], suffix: ['III', 'MD'] }); // PID-5
      expect(c.patient.birthDate).toBe('1988-08-18'); // PID-7 198808181126+0215, date only
      expect(c.patient.gender).toBe('male'); // PID-8 M
      const gp = of<Practitioner>(c, 'Practitioner').find((p) => p.name?.[0].family === 'Hippo')!; // PD1-4 88^Hippo^rold
      expect(c.patient.generalPractitioner?.map((g) => g.reference)).toContain(`Practitioner/${gp.id}`);
      const [rp] = of<RelatedPerson>(c, 'RelatedPerson');
      expect(rp.relationship?.[0].coding?.[0]).toMatchObject({ system: 'http://terminology.hl7.org/CodeSystem/v2-0131', code: 'C' }); // NK1-3 EMC (IG: → C)
      const [enc] = of<Encounter>(c, 'Encounter');
      expect(enc.class).toMatchObject({ code: 'PRENC' }); // PV1-2 P
      expect(enc.status).toBe('in-progress'); // A01
    });

    test('ADT^A01 v2.3.1 (IPF pix-A01-with-BR): an ISO OID assigning authority, outpatient', () => {
      const c = convert('ipf/pix-A01-with-BR.hl7');
      expect(c.patient.identifier?.map((i) => [i.system, i.value])).toEqual([
        ['urn:oid:2.16.840.1.113883.3.37.4.1.1.2.1.1', '306563'], // PID-3 MPI&…&ISO
        ['urn:oid:2.16.840.1.113883.3.37.4.1.1.2.611.1', '30753'],
      ]);
      expect(c.patient.name?.[0]).toMatchObject({ family: 'Molly', given: ['Barker', 'R.'], use: 'official' }); // PID-5 type L
      expect(c.patient.birthDate).toBe('1929-04-05');
      expect(c.patient.gender).toBe('female');
      expect(of<Encounter>(c, 'Encounter')[0].class).toMatchObject({ code: 'AMB' }); // PV1-2 O
    });

    test('ADT^A03 (Microsoft ADT-A03-01): the disposition PV1-36 and discharge time PV1-45', () => {
      const c = convert('microsoft-fhir-converter/ADT-A03-01.hl7');
      const [enc] = of<Encounter>(c, 'Encounter');
      // PV1-36 Admitted as Inpatient^Sample^ACR: not a table 0112 code → kept as sent (with a warning)
      expect(enc.hospitalization?.dischargeDisposition?.coding?.[0].code).toBe('Admitted as Inpatient');
      expect(c.issues.some((i) => i.severity === 'warning' && i.expression?.[0] === 'PV1-36')).toBe(true);
      expect(enc.period?.end).toBe('2015-02-09T11:34:19+01:10'); // PV1-45 20150209113419+0110, offset kept
      expect(enc.status).toBe('finished');
    });

    test('what was not mapped is reported, segment by segment and field by field', () => {
      const c = convert('microsoft-fhir-converter/ADT-A01-01.hl7');
      expect(c.unused).toEqual(expect.arrayContaining(['ARV', 'DB1-4', 'PV1-39']));
      expect(c.issues.some((i) => i.severity === 'information' && i.expression?.[0] === 'ARV')).toBe(true);
    });
  });
});
