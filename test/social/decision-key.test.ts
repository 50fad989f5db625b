/**
 * Exports without decision numbers: a mapping names the fields that identify a decision (`decisionKey`); the same
 * decision in the next export lands on the same ServiceRequest; an exact duplicate row is reported and imported once;
 * `care-gateway convert --source` reads mappings from SOCIAL_MAPPINGS_DIR as the server does; a mapping with neither a
 * decisionId nor a decisionKey, or a key naming an unknown field, is refused naming the file.
 *
 * @slow runs the command line in processes (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Bundle, ServiceRequest } from '@medplum/fhirtypes';
import { backends, tempDir, type Backend } from '../helpers/backends.js';
import { startTestGateway } from '../helpers/gateway.js';
import YAML from 'yaml';
import { compileMapping } from '../../src/social/mapping.js';
import { isikukoodCheckDigit } from '../../src/fhir/identifiers.js';
import type { Gateway } from '../../src/app.js';

const ik = (ten: string) => ten + isikukoodCheckDigit(ten);
const MAPPING = `description: Nõo vald — test export without decision numbers
municipality: { ehak: "0528" }
format: csv
delimiter: ";"
decisionKey: [isikukood, service, start]
fields: { isikukood: Isikukood, service: Teenus, start: Algus, end: Lõpp, note: Märkus }
maps: { services: { Koduteenus: home-care, Sotsiaaltransport: social-transport } }
`;

test('a mapping has a decisionId or a decisionKey of known fields', () => {
  const doc = (extra: string) => YAML.parse(MAPPING + extra) as Parameters<typeof compileMapping>[2];
  expect(compileMapping('noo-test', 'noo-test.yaml', doc('')).decisionKey).toEqual(['isikukood', 'service', 'start']);
  const noKey = { ...doc(''), decisionKey: undefined };
  expect(() => compileMapping('noo-test', 'noo-test.yaml', noKey)).toThrow(/noo-test\.yaml: field decisionId is required in every mapping \(or a decisionKey/);
  expect(() => compileMapping('noo-test', 'noo-test.yaml', { ...doc(''), decisionKey: ['isikukood', 'shoeSize'] })).toThrow(/decisionKey names "shoeSize"/);
});

describe.each(backends())('decision keys on %s', (_name, makeBackend) => {
  let backend: Backend;
  let gw: Gateway;
  let base: string;
  let url: string;
  const dir = tempDir('cg-key-');
  beforeAll(async () => {
    fs.writeFileSync(path.join(dir, 'noo-test.yaml'), MAPPING);
    backend = makeBackend();
    await backend.prepare();
    ({ gw, base, url } = await startTestGateway(backend, { SOCIAL_MAPPINGS_DIR: dir }));
  });
  afterAll(async () => {
    await gw.close();
    await backend.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the same decision lands on the same request; a repeated row is imported once and reported', async () => {
    const who = ik('4500101201');
    const row = `${who};Koduteenus;01.12.2026;31.05.2027;kolm korda nädalas`;
    const csv = `Isikukood;Teenus;Algus;Lõpp;Märkus\n${row}\n${who};Sotsiaaltransport;01.12.2026;;\n${row}\n`;
    const res = await fetch(`${url}/social-care/noo-test`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: csv });
    const report = (await res.json()) as { rows: { total: number; accepted: number; duplicates?: number }; duplicates?: { row: number; duplicateOf: number }[] };
    expect(res.status).toBe(200);
    expect(report.rows).toMatchObject({ total: 3, accepted: 2, duplicates: 1 });
    expect(report.duplicates).toEqual([expect.objectContaining({ row: 3, duplicateOf: 1 })]);
    const requests = async () => ((await (await fetch(`${base}/ServiceRequest?identifier=https://care-gateway.ee/fhir/sid/social-decision/0528|&_count=100`)).json()) as Bundle<ServiceRequest>).entry ?? [];
    const first = await requests();
    // the next export: the home care decision again, its end moved; no new request
    const next = `Isikukood;Teenus;Algus;Lõpp;Märkus\n${who};Koduteenus;01.12.2026;30.06.2027;kolm korda nädalas\n`;
    expect((await fetch(`${url}/social-care/noo-test`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: next })).status).toBe(200);
    const after = await requests();
    expect(after.length).toBe(first.length);
    const ids = after.map((e) => e.resource!.identifier![0].value!);
    for (const id of ids) {
      expect(id).toMatch(/^K-[0-9a-f]{20}$/);
      expect(id).not.toContain(who);
    }
  });

  test('care-gateway convert --source reads SOCIAL_MAPPINGS_DIR', () => {
    const file = path.join(dir, 'export.csv');
    fs.writeFileSync(file, `Isikukood;Teenus;Algus;Lõpp;Märkus\n${ik('4500101202')};Koduteenus;01.12.2026;;\n`);
    const run = (env: Record<string, string>) => spawnSync(process.execPath, ['bin/care-gateway.js', 'convert', file, '--source', 'noo-test'], { env: { ...process.env, ...env }, encoding: 'utf8' });
    const withDir = run({ SOCIAL_MAPPINGS_DIR: dir });
    expect(withDir.status).toBe(0);
    const bundle = JSON.parse(withDir.stdout) as Bundle;
    expect(bundle.entry!.some((e) => e.resource?.resourceType === 'ServiceRequest')).toBe(true);
    const without = run({ SOCIAL_MAPPINGS_DIR: '' });
    expect(without.status).not.toBe(0);
    expect(without.stderr).toMatch(/noo-test/);
  });
});
