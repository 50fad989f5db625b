/**
 * `care-gateway convert FILE` (src/cli.ts): a Bundle on stdout, exit 0; a readable error and non-zero exit otherwise.
 *
 * @slow runs the command line in processes (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, Patient } from '@medplum/fhirtypes';
import { tempDir } from '../helpers/backends.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

const BIN = path.resolve(process.cwd(), 'bin/care-gateway.js');
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

test('an HL7 v2 discharge becomes a transaction Bundle of PUT-by-id entries', () => {
  const dir = tempDir();
  const file = path.join(dir, 'a03.hl7');
  fs.writeFileSync(file, eeDischarge().replace(/\r/g, '\n')); // LF separators, as many files have
  const r = run('convert', file);
  expect(r.status).toBe(0);
  const bundle = JSON.parse(r.stdout) as Bundle;
  expect(bundle.type).toBe('transaction');
  const patient = bundle.entry!.find((e) => e.resource?.resourceType === 'Patient')!.resource as Patient;
  expect(patient.identifier?.[0]).toEqual({ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'NI' }] }, system: 'https://fhir.ee/sid/pid/est/ni', value: '37302102711' });
  expect(bundle.entry!.every((e) => e.request?.method === 'PUT')).toBe(true);
  expect(r.stderr).toMatch(/conversion notes/); // what was not mapped, apart from the Bundle
  // the same file again: the same ids
  const again = JSON.parse(run('convert', file).stdout) as Bundle;
  expect(again.entry!.map((e) => e.fullUrl)).toEqual(bundle.entry!.map((e) => e.fullUrl));
});

test('a FHIR resource file is validated and printed back', () => {
  const r = run('convert', path.resolve(process.cwd(), 'test/fixtures/fhir/CarePlan-home-rehab.json'));
  expect(r.status).toBe(0);
  expect((JSON.parse(r.stdout) as Bundle).entry![0].resource!.resourceType).toBe('CarePlan');
});

test.each([
  ['a missing file', ['convert', 'no-such-file.hl7'], /no such file/],
  ['not HL7', ['convert', path.resolve(process.cwd(), 'README.md')], /MSH/],
  ['no file named', ['convert'], /usage/],
  ['an unknown command', ['frobnicate'], /usage/],
])('%s: non-zero exit with a readable error', (_n, args, message) => {
  const r = run(...(args as string[]));
  expect(r.status).not.toBe(0);
  expect(r.stderr).toMatch(message);
  expect(r.stdout).toBe('');
});

test('an invalid isikukood fails the conversion, naming PID-3', () => {
  const dir = tempDir();
  const file = path.join(dir, 'bad.hl7');
  fs.writeFileSync(file, eeDischarge({ isikukood: '36805280108' }));
  const r = run('convert', file);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/PID-3/);
});

describe('convert --source (municipal social-care exports)', () => {
  const cli = (args: string[]) => spawnSync(process.execPath, ['bin/care-gateway.js', 'convert', ...args], { encoding: 'utf8' });

  test('the Elva JSON example becomes a collection Bundle with the ServiceRequests, case workers and school', () => {
    const r = cli(['mappings/social/examples/elva.json', '--source', 'elva']);
    expect(r.status).toBe(0);
    const bundle = JSON.parse(r.stdout) as { type: string; entry: { resource: { resourceType: string; code?: { coding: { code: string }[] }; name?: string } }[] };
    expect(bundle.type).toBe('collection');
    const srs = bundle.entry.filter((e) => e.resource.resourceType === 'ServiceRequest').map((e) => e.resource.code!.coding[0].code);
    expect(srs).toEqual(['personal-assistant', 'child-case-management']);
    expect(bundle.entry.some((e) => e.resource.resourceType === 'Organization' && e.resource.name === 'Elva Gümnaasium')).toBe(true);
  });

  test('an unknown source and a file of only bad rows exit non-zero with a readable error', () => {
    const unknown = cli(['mappings/social/examples/elva.json', '--source', 'atlantis']);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toMatch(/no mapping for social-care source "atlantis"/);
    const wrong = cli(['mappings/social/examples/elva.json', '--source', 'tartu-linn']);
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toMatch(/header row lacks the column/);
  });
});
