/**
 * What `care-gateway convert` prints for an HL7 v2 file is a Bundle a FHIR server takes as it is: posted to
 * `POST /fhir` every entry succeeds, and posting it again changes nothing.
 *
 * @slow runs the command line in processes (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Bundle } from '@medplum/fhirtypes';
import { backends, tempDir } from '../helpers/backends.js';
import { startTestGateway } from '../helpers/gateway.js';
import { eeDischarge, gpReferral } from '../fixtures/hl7v2/messages.js';

test('the converted Bundle posts to the gateway unchanged, twice', async () => {
  const dir = tempDir('cg-conv-');
  const file = path.join(dir, 'messages.hl7');
  fs.writeFileSync(file, [eeDischarge({ isikukood: '37302102711', controlId: 'CV-1' }), gpReferral('37302102711', 'CV-2')].join('\r'));
  const r = spawnSync(process.execPath, [path.resolve('bin/care-gateway.js'), 'convert', file], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  const backend = backends()[0][1]();
  await backend.prepare();
  const { gw, base } = await startTestGateway(backend);
  try {
    for (const round of [1, 2]) {
      const res = await fetch(base, { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: r.stdout });
      const out = (await res.json()) as Bundle;
      expect([round, res.status]).toEqual([round, 200]);
      const statuses = out.entry!.map((e) => e.response!.status);
      expect([round, statuses.filter((s) => !/^20[01]/.test(s))]).toEqual([round, []]);
    }
  } finally {
    await gw.close();
    await backend.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
