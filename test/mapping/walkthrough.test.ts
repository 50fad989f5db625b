/**
 * mappings/hl7v2/README.md "Walkthrough: a Z-segment field and a new trigger", followed as written: its file blocks
 * are written into a site folder, the mapping is loaded with that folder as HL7_MAPPINGS_DIR, and its message is
 * converted. If the README's steps stop working, this fails.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Flag } from '@medplum/fhirtypes';
import { parseHl7 } from '../../src/hl7v2/parse.js';
import { convertHl7 } from '../../src/mapping/hl7v2/convert.js';
import { loadMappings, setHl7MappingsDir } from '../../src/mapping/hl7v2/load.js';
import { loadConfig } from '../../src/config.js';
import { mappingsDir } from '../../src/paths.js';

const readme = fs.readFileSync(path.join(mappingsDir(), 'hl7v2', 'README.md'), 'utf8');
const walkthrough = readme.slice(readme.indexOf('## Walkthrough'));
const blocks = [...walkthrough.matchAll(/```(\w+) (\S+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], name: m[2], body: m[3] }));

afterAll(() => setHl7MappingsDir(undefined));

test('the walkthrough has its two files and its message', () => {
  expect(blocks.map((b) => b.name)).toEqual(['site/resources/CareNeed.yaml', 'site/messages/ADT_A09.yaml', 'message']);
});

test('the walkthrough works as written: the Z-segment becomes a Flag and the new trigger is routed', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-walkthrough-'));
  for (const b of blocks.filter((x) => x.lang === 'yaml')) {
    fs.mkdirSync(path.dirname(path.join(root, b.name)), { recursive: true });
    fs.writeFileSync(path.join(root, b.name), b.body);
  }
  const message = blocks.find((b) => b.name === 'message')!.body.trim().split('\n').join('\r');
  // without the site folder: A12 is not routed
  expect(() => convertHl7(parseHl7(message))).toThrow(/A12/);
  // `HL7_MAPPINGS_DIR=site`, as the README starts the gateway
  const config = loadConfig({ HL7_MAPPINGS_DIR: path.join(root, 'site') } as NodeJS.ProcessEnv);
  setHl7MappingsDir(config.hl7MappingsDir);
  const c = convertHl7(parseHl7(message));
  expect(c.event).toMatchObject({ trigger: 'A12', structure: 'ADT_A09', plan: 'other' });
  const flag = c.resources.find((r): r is Flag => r.resourceType === 'Flag');
  expect(flag).toMatchObject({ status: 'active', code: { coding: [{ code: 'KODU' }] }, subject: { reference: `Patient/${c.patient.id}` } });
  expect(c.patient.name?.[0]).toMatchObject({ family: 'Tamm', given: ['Mari'] });
  expect(c.unused).not.toContain('ZCN');
  // the project's own routes of the structure are still there
  expect(c.resources.some((r) => r.resourceType === 'Encounter')).toBe(true);
  // a typo in a site file stops the load, naming the file and line
  const broken = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-walkthrough-'));
  fs.cpSync(path.join(root, 'site'), path.join(broken, 'site'), { recursive: true });
  fs.appendFileSync(path.join(broken, 'site/resources/CareNeed.yaml'), '  category: { form: ZCN-4 }\n');
  expect(() => loadMappings(mappingsDir(), path.join(broken, 'site'))).toThrow(/site\/resources\/CareNeed\.yaml:8: elements\.category\.form: unknown key "form"/);
});

test('HL7_MAPPINGS_DIR naming no folder stops the start, naming it', () => {
  expect(() => setHl7MappingsDir(path.join(os.tmpdir(), 'cg-no-such-folder'))).toThrow(/HL7_MAPPINGS_DIR=.*cg-no-such-folder: no such folder/);
});
