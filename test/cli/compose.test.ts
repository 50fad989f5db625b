/**
 * The compose file's gateway starts as written: the gateway's environment from docker/compose.yaml (and the image's
 * ENV from docker/Dockerfile), with the keys `care-gateway dev-keys` makes, binds 0.0.0.0 with authentication on;
 * a dev token is accepted and a request without one is refused. The database is the embedded store here (the
 * compose file's PostgreSQL host exists only inside compose).
 *
 * @slow starts the gateway process of the compose file (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { pgliteBackend, tempDir } from '../helpers/backends.js';
import { killed, spawnGateway } from '../helpers/gateway.js';

test('docker/compose.yaml: the gateway starts with its environment and a dev-keys token works', async () => {
  const compose = YAML.parse(fs.readFileSync('docker/compose.yaml', 'utf8')) as { services: Record<string, { environment?: Record<string, string>; command?: string[] }> };
  const imageEnv = Object.fromEntries(
    [...fs.readFileSync('docker/Dockerfile', 'utf8').matchAll(/^ENV (.+)$/gm)].flatMap((m) => m[1].split(/\s+/).map((kv) => kv.split('=') as [string, string])),
  );
  const dir = tempDir('cg-compose-');
  const keysDir = path.join(dir, 'keys');
  // the keys service, as compose runs it (its volume is a folder here)
  const keysCmd = compose.services.keys.command!;
  expect(keysCmd.slice(1, 3)).toEqual(['bin/care-gateway.js', 'dev-keys']);
  const made = spawnSync(process.execPath, ['bin/care-gateway.js', 'dev-keys', keysDir], { env: { ...process.env, ...compose.services.keys.environment }, encoding: 'utf8' });
  expect(made.status).toBe(0);
  const tokens = Object.fromEntries(made.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const env: Record<string, string> = { ...imageEnv, ...compose.services.gateway.environment };
  expect(env.HOST).toBe('0.0.0.0');
  env.AUTH_JWKS = env.AUTH_JWKS.replace('/keys', keysDir);
  delete env.DATABASE_URL;
  // an embedded store made from the test template (a new one would spend ~5 s initialising the database)
  const backend = pgliteBackend();
  await backend.prepare();
  env.DATA_DIR = backend.env().DATA_DIR;
  // ports of its own (the compose ones may be taken here); MLLP stays on, so its allow-list rule applies too
  const gw = await spawnGateway({ ...env, PORT: '0', MLLP_PORT: String(21000 + (process.pid % 5000)) });
  try {
    const base = gw.url;
    expect((await fetch(`${base}/fhir/Patient?_count=1`)).status).toBe(401);
    // the tokens' audience is the compose BASE_URL; the gateway's too
    for (const who of ['HOSPITAL_TOKEN', 'GP_TOKEN', 'MUNICIPALITY_TOKEN', 'COORDINATOR_TOKEN']) {
      const res = await fetch(`${base}/fhir/Patient?_count=1`, { headers: { Authorization: `Bearer ${tokens[who]}` } });
      expect([who, res.status]).toEqual([who, 200]);
    }
  } finally {
    await killed(gw.proc, 'SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
    await backend.cleanup();
  }
});
