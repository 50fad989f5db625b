/**
 * Who may send over MLLP: the sender allow-list (MSH-3/4 and source address, MLLP_ALLOWED_SENDERS) and MLLP over
 * TLS with client certificates (MLLP_TLS_CERT/KEY/CA), through a whole gateway on real sockets; certificates are
 * made here with openssl. And the start-up rule: no MLLP on a public address without an allow-list.
 *
 * @slow starts gateway processes and waits out idle timeouts (`npm run test:unit` leaves it out; `npm test` runs it)
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { AuditEvent } from '@medplum/fhirtypes';
import type { Gateway } from '../../src/app.js';
import { connectMllp } from '../../src/mllp/client.js';
import { frame } from '../../src/mllp/framing.js';
import { parseSenderRules, SenderAllowList } from '../../src/mllp/senders.js';
import { startMllpServer } from '../../src/mllp/server.js';
import { silentLogger } from '../../src/log.js';
import { backends, tempDir, type Backend } from '../helpers/backends.js';
import { spawnGateway, startTestGateway } from '../helpers/gateway.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

const msa = (ack: Buffer) => ack.toString('utf8').split('\r').find((l) => l.startsWith('MSA|'))!.split('|').slice(1, 3);
const err3 = (ack: Buffer) => ack.toString('utf8').split('\r').find((l) => l.startsWith('ERR|'))?.split('|')[3];

test('sender rules: applications, facilities, addresses, CIDR blocks and IPv4 peers on dual-stack sockets', () => {
  const list = new SenderAllowList(parseSenderRules('ELVA_HIS|ELVA_HAIGLA@10.20.0.0/16, PERE|*@192.0.2.17 ,*|TYK@::1'));
  expect(list.allows('ELVA_HIS', 'ELVA_HAIGLA', '10.20.3.4')).toBe(true);
  expect(list.allows('ELVA_HIS', 'ELVA_HAIGLA', '::ffff:10.20.255.1')).toBe(true);
  expect(list.allows('ELVA_HIS', 'ELVA_HAIGLA', '10.21.0.1')).toBe(false);
  expect(list.allows('ELVA_HIS', 'OTHER', '10.20.3.4')).toBe(false);
  expect(list.allows('PERE', 'anything', '192.0.2.17')).toBe(true);
  expect(list.allows('PERE', 'anything', '192.0.2.18')).toBe(false);
  expect(list.allows('X', 'TYK', '::1')).toBe(true);
  expect(list.allowsAddress('10.20.9.9')).toBe(true);
  expect(list.allowsAddress('127.0.0.1')).toBe(false);
  expect(() => parseSenderRules('ELVA_HIS@10.0.0.1')).toThrow(/APPLICATION\|FACILITY@ADDRESS/);
  expect(() => parseSenderRules('A|B@10.0.0.300')).toThrow(/not an IP address/);
  expect(() => parseSenderRules('A|B@10.0.0.0/33')).toThrow(/not an IP address/);
});

test('a connection from an address no rule names is closed before anything is read', async () => {
  let handled = 0;
  const server = await startMllpServer({
    host: '127.0.0.1',
    port: 0,
    maxMessageBytes: 1 << 20,
    logger: silentLogger,
    handler: async () => {
      handled++;
      return Buffer.from('MSH|^~\\&|GW|X|||||ACK|1|P|2.5.1\rMSA|AA|1');
    },
    allowAddress: (a) => new SenderAllowList(parseSenderRules('*|*@10.0.0.0/8')).allowsAddress(a),
  });
  try {
    const socket = net.connect(server.port, '127.0.0.1');
    const got: Buffer[] = [];
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('error', () => undefined);
    socket.write(frame(eeDischarge({ controlId: 'FROM-NOWHERE' })));
    await new Promise<void>((r) => socket.once('close', () => r()));
    expect(got).toHaveLength(0);
    expect(handled).toBe(0);
  } finally {
    await server.close();
  }
});

describe.each(backends().slice(0, 1))('MLLP senders and TLS on %s', (_name, makeBackend) => {
  const dir = tempDir('cg-mllp-tls-');
  const pem = (f: string) => path.join(dir, f);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  let backend: Backend;
  let gw: Gateway;
  let url: string;
  let mllpPort: number;

  beforeAll(async () => {
    // a county CA; the gateway's certificate for 127.0.0.1; the hospital's client certificate; a stranger's
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Tartumaa test CA');
    const leaf = (name: string, cn: string, ext: string, ca = 'ca') => {
      fs.writeFileSync(pem(`${name}.ext`), ext);
      ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
      ssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`);
    };
    leaf('server', 'care-gateway', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    leaf('hospital', 'ELVA_HIS', 'extendedKeyUsage=clientAuth\n');
    ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'rogue.key', '-out', 'rogue.pem', '-days', '2', '-subj', '/CN=rogue');
    backend = makeBackend();
    ({ gw, url, mllpPort } = await startTestGateway(backend, {
      MLLP_ALLOWED_SENDERS: 'ELVA_HIS|ELVA_HAIGLA@127.0.0.1',
      MLLP_TLS_CERT: pem('server.pem'),
      MLLP_TLS_KEY: pem('server.key'),
      MLLP_TLS_CA: pem('ca.pem'),
    }));
  });
  afterAll(async () => {
    await gw?.close();
    await backend?.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const tlsOpts = (client: 'hospital' | 'rogue' | null) => ({
    ca: fs.readFileSync(pem('ca.pem')),
    ...(client ? { cert: fs.readFileSync(pem(`${client}.pem`)), key: fs.readFileSync(pem(`${client}.key`)) } : {}),
  });

  test('an allowed sender with a client certificate the county CA signed: AA, stored and processed', async () => {
    const c = await connectMllp('127.0.0.1', mllpPort, { tls: tlsOpts('hospital') });
    try {
      expect(msa(await c.send(eeDischarge({ controlId: 'TLS-1' })))).toEqual(['AA', 'TLS-1']);
    } finally {
      await c.close();
    }
    const list = (await (await fetch(`${url}/admin/messages?status=processed`)).json()) as { entry?: { resource?: { id?: string } }[] } & Record<string, unknown>;
    expect(JSON.stringify(list)).toContain('TLS-1');
  });

  test('MSH-3/4 not on the list: stored as rejected and answered AR with ERR-3 207', async () => {
    const c = await connectMllp('127.0.0.1', mllpPort, { tls: tlsOpts('hospital') });
    try {
      const other = eeDischarge({ controlId: 'TLS-2' }).replace('ELVA_HIS|ELVA_HAIGLA', 'OTHER_HIS|OTHER_HOSPITAL');
      const ack = await c.send(other);
      expect(msa(ack)).toEqual(['AR', 'TLS-2']);
      expect(err3(ack)).toMatch(/^207/);
      expect(ack.toString()).toContain('not allowed');
    } finally {
      await c.close();
    }
    const rejected = JSON.stringify(await (await fetch(`${url}/admin/messages?status=rejected`)).json());
    expect(rejected).toContain('TLS-2');
    expect(rejected).toContain('OTHER_HIS');
  });

  test('with an allow-list every MLLP message is audited: sender, address, the person, the outcome', async () => {
    const b = (await (await fetch(`${url}/fhir/AuditEvent?_count=100`)).json()) as { entry?: { resource: AuditEvent }[] };
    const events = (b.entry ?? []).map((e) => e.resource);
    const query = (e: AuditEvent) => Buffer.from(e.entity?.find((x) => x.query)?.query ?? '', 'base64').toString();
    const ok = events.find((e) => query(e) === 'MLLP ADT^A03^ADT_A03 TLS-1')!;
    expect(ok).toMatchObject({ action: 'C', outcome: '0' });
    expect(ok.agent![0].who!.display).toBe('MLLP sender ELVA_HIS|ELVA_HAIGLA');
    expect(ok.agent![0].network!.address).toBe('127.0.0.1');
    expect(ok.entity!.some((x) => x.what?.reference?.startsWith('Patient/'))).toBe(true);
    const refused = events.find((e) => query(e) === 'MLLP ADT^A03^ADT_A03 TLS-2')!;
    expect(refused).toMatchObject({ outcome: '4', outcomeDesc: 'HL7 AR' });
    expect(refused.agent![0].who!.display).toBe('MLLP sender OTHER_HIS|OTHER_HOSPITAL');
  });

  test('without a client certificate, with one from another CA, or in plain TCP: no message gets through', async () => {
    await expect(connectMllp('127.0.0.1', mllpPort, { tls: tlsOpts(null) }).then((c) => c.send(eeDischarge({ controlId: 'TLS-3' })))).rejects.toThrow();
    await expect(connectMllp('127.0.0.1', mllpPort, { tls: tlsOpts('rogue') }).then((c) => c.send(eeDischarge({ controlId: 'TLS-4' })))).rejects.toThrow();
    const plain = await connectMllp('127.0.0.1', mllpPort);
    await expect(plain.send(eeDischarge({ controlId: 'TLS-5' }))).rejects.toThrow();
    const all = JSON.stringify(await (await fetch(`${url}/admin/messages`)).json());
    for (const id of ['TLS-3', 'TLS-4', 'TLS-5']) expect(all).not.toContain(id);
  });
});

test('bound to a public address with MLLP on and no sender allow-list, the gateway refuses to start and says why', async () => {
  const dir = tempDir('cg-mllp-public-');
  try {
    fs.writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [] }));
    await expect(
      spawnGateway({ HOST: '0.0.0.0', DATA_DIR: dir, MLLP_PORT: '25999', AUTH_JWKS: path.join(dir, 'jwks.json'), AUTH_ISSUERS: 'https://auth.test' }),
    ).rejects.toThrow(/MLLP_ALLOWED_SENDERS/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
