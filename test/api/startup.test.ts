/**
 * Starting the gateway: a start that fails while preparing the mappings stops with its own message and leaves no
 * database open behind it; and the embedded store's page cache is the one PGLITE_SHARED_BUFFERS asks for.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { startGateway } from '../../src/app.js';
import { silentLogger } from '../../src/log.js';
import { pgliteBackend, tempDir } from '../helpers/backends.js';

const env = (extra: Record<string, string>): NodeJS.ProcessEnv => ({ PORT: '0', MLLP_PORT: '0', HOST: '127.0.0.1', ...extra });

test('a broken site mapping stops the start naming file, line and path; the store it began to open is closed again', async () => {
  const backend = pgliteBackend();
  await backend.prepare();
  const site = tempDir('cg-site-');
  try {
    fs.mkdirSync(path.join(site, 'resources'));
    const patient = fs.readFileSync(path.resolve('mappings/hl7v2/resources/Patient.yaml'), 'utf8');
    fs.writeFileSync(path.join(site, 'resources', 'Patient.yaml'), `${patient}\ncolour: blue\n`);
    const line = `${patient}\n`.split('\n').length;
    const broken = loadConfig(env({ ...backend.env(), HL7_MAPPINGS_DIR: site }));
    await expect(startGateway(broken, silentLogger)).rejects.toThrow(new RegExp(`resources/Patient\\.yaml:${line}: .*colour`));
    // an open embedded database has postmaster.pid in its directory; a store left opening would write it within
    // ~1 s (a test store opens in ~0.6 s)
    const pid = path.join(backend.env().DATA_DIR, 'pgdata', 'postmaster.pid');
    for (let waited = 0; waited < 1500; waited += 100) {
      expect(fs.existsSync(pid)).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // the same directory opens again in this process and serves: nothing of the failed start holds it
    const gw = await startGateway(loadConfig(env(backend.env())), silentLogger);
    try {
      expect((await fetch(`http://127.0.0.1:${gw.http.port}/healthz`)).status).toBe(200);
      expect(await gw.store.db.query(`SELECT current_setting('shared_buffers') AS v`)).toEqual([{ v: backend.env().PGLITE_SHARED_BUFFERS }]);
    } finally {
      await gw.close();
    }
  } finally {
    fs.rmSync(site, { recursive: true, force: true });
    await backend.cleanup();
  }
});

test('PGLITE_SHARED_BUFFERS takes a PostgreSQL size from 1MB to 4GB and refuses anything else', () => {
  expect(loadConfig({}).pgliteSharedBuffers).toBe('32MB');
  expect(loadConfig({ PGLITE_SHARED_BUFFERS: '32MB' }).pgliteSharedBuffers).toBe('32MB');
  expect(loadConfig({ PGLITE_SHARED_BUFFERS: '2048kB' }).pgliteSharedBuffers).toBe('2048kB');
  for (const bad of ['32', '32 MB', '32mb', '512kB', '5GB', 'lots', '-1MB']) {
    expect(() => loadConfig({ PGLITE_SHARED_BUFFERS: bad })).toThrow(/PGLITE_SHARED_BUFFERS must be a size from 1MB to 4GB/);
  }
});
