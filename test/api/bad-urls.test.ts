/**
 * Request URLs that cannot be read as the client meant them get 400 with an OperationOutcome, never a 500 and never
 * a search on other text: malformed percent escapes and escapes that are not UTF-8 (URLSearchParams would turn them
 * into U+FFFD or keep them literally), and NUL characters (which PostgreSQL cannot store or compare), in the path
 * or the query, on every backend.
 *
 * @see https://www.rfc-editor.org/rfc/rfc3986#section-2.1, https://hl7.org/fhir/R4/http.html
 */
import http from 'node:http';
import net from 'node:net';
import type { OperationOutcome } from '@medplum/fhirtypes';
import type { Gateway } from '../../src/app.js';
import { requestUrl } from '../../src/api/http.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { backends, type Backend } from '../helpers/backends.js';
import { startTestGateway } from '../helpers/gateway.js';

/** GET with the request target sent exactly as given (fetch would not send every one of them as it is). */
function rawGet(url: string, target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({ host: u.hostname, port: u.port, path: target, method: 'GET', headers: { Accept: 'application/fhir+json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A request line written to the socket as it is (http.request refuses some targets itself). */
function rawRequestLine(url: string, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const socket = net.connect(Number(u.port), u.hostname, () => socket.end(`GET ${target} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    socket.on('error', reject);
  });
}

const BAD: [string, string, RegExp][] = [
  ['a truncated escape at the end of the query', '/fhir/Patient?name=%E0%A4%A', /query has a malformed percent escape/],
  ['an escape that is not hex, in the path', '/fhir/Patient/%zz', /path has a malformed percent escape/],
  ['an escape that is not hex, in the query', '/fhir/Patient?name=%zzTamm', /query has a malformed percent escape/],
  ['a lone % in the query', '/fhir/Patient?name=100%', /query has a malformed percent escape/],
  ['escapes that are not UTF-8 (a truncated sequence)', '/fhir/Patient?name=%E0%A4', /query has a malformed percent escape/],
  ['escapes that are not UTF-8 (Latin-1 õ)', '/fhir/Patient?family=%F5unapuu', /query has a malformed percent escape/],
  ['a NUL in the query', '/fhir/Patient?name=%00', /query contains a NUL character/],
  ['a NUL in a parameter name', '/fhir/Patient?na%00me=x', /query contains a NUL character/],
  ['a NUL in the path', '/fhir/Patient/%00', /path contains a NUL character/],
  ['a NUL in a history path', '/fhir/Patient/p1/_history/1%00', /path contains a NUL character/],
  ['a bad escape on a non-FHIR route', '/admin/messages/%zz', /path has a malformed percent escape/],
];

describe('requestUrl', () => {
  test.each(BAD)('%s → 400', (_name, target, text) => {
    const r = requestUrl(target);
    expect(r).toBeInstanceOf(OutcomeError);
    expect((r as OutcomeError).status).toBe(400);
    expect((r as OutcomeError).message).toMatch(text);
  });

  test('well-formed escapes pass, a literal % as %25 and an escaped U+FFFD included', () => {
    for (const target of ['/fhir/Patient?name=%C3%95unapuu', '/fhir/Patient?name=100%25', '/fhir/Patient?name=%EF%BF%BD', '/fhir/Patient/abc', '/fhir/Patient?name=J%C3%BCri+Tamm&_count=5']) {
      expect(requestUrl(target)).toBeInstanceOf(URL);
    }
    expect((requestUrl('/fhir/Patient?name=%C3%95unapuu') as URL).searchParams.get('name')).toBe('Õunapuu');
  });
});

describe.each(backends())('bad request URLs over HTTP on %s', (_name, makeBackend) => {
  let backend: Backend;
  let gw: Gateway;
  let url: string;

  beforeAll(async () => {
    backend = makeBackend();
    await backend.prepare();
    ({ gw, url } = await startTestGateway(backend));
  });
  afterAll(async () => {
    await gw.close();
    await backend.cleanup();
  });

  test.each(BAD)('%s → 400 OperationOutcome', async (_name, target, text) => {
    const res = await rawGet(url, target);
    expect(res.status).toBe(400);
    const oo = JSON.parse(res.body) as OperationOutcome;
    expect(oo.resourceType).toBe('OperationOutcome');
    expect(oo.issue[0].severity).toBe('error');
    expect(oo.issue[0].diagnostics).toMatch(text);
    expect(oo.issue[0].details?.coding?.[0].code).toBe('CG-INVALID-QUERY');
  });

  test('an absolute request target that is no URL → 400, not 500', async () => {
    const res = await rawRequestLine(url, 'http://[::1/fhir/Patient');
    expect(res).toMatch(/^HTTP\/1\.1 400 /);
  });

  test('well-formed escapes still search as before', async () => {
    const res = await rawGet(url, '/fhir/Patient?name=%C3%95unapuu');
    expect(res.status).toBe(200);
    expect((JSON.parse(res.body) as { resourceType: string }).resourceType).toBe('Bundle');
  });
});
