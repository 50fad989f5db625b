/**
 * The HTTP edge: node's http server, a few routes, body limits, and the one place where errors become
 * responses. FHIR interactions are handled by the transport-free FhirApi.
 *
 * Routes: /fhir/*, POST /hl7v2, POST /social-care/{source}, /admin/messages,
 * GET /healthz, GET /readyz.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { OutcomeError, toOutcomeError, CATEGORIES } from '../fhir/outcome.js';
import type { Logger } from '../log.js';
import { defaultFhirBase } from '../config.js';
import type { Store } from '../store/index.js';
import { FhirApi, json, type FhirResponse } from './fhir.js';
import { adminRoutes } from './admin.js';
import { Security } from '../auth/security.js';
import { recordAudit } from '../auth/audit.js';
import type { HttpRequest, Route } from './route.js';
import type { Principal } from '../auth/jwt.js';
import type { JsonLimits } from '../fhir/json.js';

export type { HttpRequest, Route } from './route.js';

export interface HttpOptions {
  host: string;
  port: number;
  /** absolute FHIR base; computed from the bound port when undefined */
  baseUrl?: string;
  maxBodyBytes: number;
  /** bounds of a FHIR JSON body (src/fhir/json.ts); handed to FhirApi with the other options */
  jsonLimits?: JsonLimits;
  defaultPageSize: number;
  maxPageSize: number;
  logger: Logger;
  /** extra routes, e.g. POST /hl7v2 */
  routes?: { method: string; pattern: RegExp; handler: Route; /** a larger body limit for this route (file uploads) */ maxBodyBytes?: number }[];
  /** runs one stored inbox entry now (POST /admin/messages/{id}/$reprocess) */
  reprocess?: (id: string) => Promise<boolean>;
  /** bearer authentication on every route but /healthz, /readyz and /fhir/metadata */
  security?: Security;
}

export interface HttpServer {
  port: number;
  baseUrl: string;
  server: http.Server;
  fhir: FhirApi;
  /** stop accepting, wait for in-flight requests, then resolve */
  close(): Promise<void>;
}

const SECURITY_HEADERS: Record<string, string> = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-store',
  'Referrer-Policy': 'no-referrer',
  'Content-Security-Policy': "default-src 'none'",
};

export async function startHttpServer(store: Store, opts: HttpOptions): Promise<HttpServer> {
  const apiOpts = { ...opts, baseUrl: opts.baseUrl ?? '' };
  const fhir = new FhirApi(store, apiOpts);
  const routes: NonNullable<HttpOptions['routes']> = [...adminRoutes(store, opts.reprocess), ...(opts.routes ?? [])];
  let inFlight = 0;
  let idle: (() => void) | undefined;

  const handle = async (req: HttpRequest): Promise<FhirResponse> => {
    if (req.path === '/fhir' || req.path.startsWith('/fhir/')) {
      return fhir.handle({ method: req.method, path: req.path.slice(5), query: req.query, headers: req.headers, body: req.body, remoteAddress: req.remoteAddress, principal: req.principal });
    }
    if (req.method === 'GET' && req.path === '/healthz') return json(200, { status: 'ok' });
    if (req.method === 'GET' && req.path === '/readyz') {
      try {
        await store.db.query('SELECT 1');
        return json(200, { status: 'ready', store: store.db.kind });
      } catch {
        return json(503, { status: 'unavailable', store: store.db.kind });
      }
    }
    for (const r of routes) {
      const m = r.pattern.exec(req.path);
      if (!m || r.method !== req.method) continue;
      if (!opts.security) return r.handler(req, m);
      // authenticated routes: every call, refusals too, leaves an AuditEvent before the answer
      let res: FhirResponse;
      try {
        req.principal ??= await opts.security.authenticate(req.headers, req.remoteAddress);
        if (req.path.startsWith('/admin/')) Security.requireKind(req.principal, ['coordinator'], 'the admin API');
        if (req.path === '/hl7v2') Security.requireKind(req.principal, ['hospital', 'gp', 'coordinator'], 'HL7 v2 over HTTP');
        if (req.path.startsWith('/social-care/')) Security.requireKind(req.principal, ['municipality', 'coordinator'], 'the social-care import');
        res = await r.handler(req, m);
      } catch (err) {
        const e = toOutcomeError(err);
        res = json(CATEGORIES[e.category].http, e.outcome);
      }
      // refused at authentication: counted per address and minute, not audited one by one
      if (req.principal) await audit(req, res.status, res.auditPatients ?? []);
      return res;
    }
    throw new OutcomeError('not-found', `no route for ${req.method} ${req.path}`, 'url');
  };

  /** The AuditEvent of a non-FHIR call (the FHIR API audits its own). */
  const audit = async (req: Pick<HttpRequest, 'method' | 'path' | 'principal' | 'remoteAddress'>, status: number, patients: string[]): Promise<void> => {
    await recordAudit(store, {
      interaction: req.method === 'GET' ? (/\/[^/]+\/[^/]+$/.test(req.path) && !req.path.endsWith('/messages') ? 'read' : 'search-type') : req.method === 'POST' && !req.path.includes('$') ? 'create' : 'operation',
      outcome: status < 400 ? '0' : status < 500 ? '4' : '8',
      outcomeDesc: status >= 400 ? `HTTP ${status}` : undefined,
      principal: req.principal,
      query: req.path,
      patients,
      address: req.remoteAddress,
    }).catch((e: unknown) => opts.logger.error('audit write failed', { error: e instanceof Error ? e.message : String(e) }));
  };

  /** A request refused before it reached its handler (e.g. a body over the limit): audited too, naming the caller if its token is good. */
  const auditRefusal = async (req: http.IncomingMessage, status: number, known?: Principal): Promise<void> => {
    if (!opts.security) return;
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz' || path === '/readyz') return;
    const headers: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const principal = known ?? (await opts.security.authenticate(headers, req.socket.remoteAddress ?? '').catch(() => undefined));
    if (principal) await audit({ method: req.method ?? 'GET', path, principal, remoteAddress: req.socket.remoteAddress ?? '' }, status, []);
  };

  const server = http.createServer((req, res) => {
    inFlight++;
    const started = performance.now();
    const done = (r: FhirResponse): void => {
      res.writeHead(r.status, { ...SECURITY_HEADERS, ...r.headers });
      res.end(r.body);
      opts.logger.debug('http', { method: req.method, path: req.url?.split('?')[0], status: r.status, ms: +(performance.now() - started).toFixed(1) });
      if (--inFlight === 0 && idle) idle();
    };
    const fail = (err: unknown): void => {
      const e = toOutcomeError(err);
      if (e.category === 'fault') opts.logger.error('http request failed', { error: err instanceof Error ? err.message : String(err) });
      done(json(CATEGORIES[e.category].http, e.outcome));
    };
    const pathname = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/';
    const limit = routes.find((r) => r.method === req.method && r.pattern.test(pathname))?.maxBodyBytes ?? opts.maxBodyBytes;
    const headers: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    const remoteAddress = req.socket.remoteAddress ?? '';
    // the token is checked before a byte of the body is read: without one, a 256 MB upload costs nothing
    const open = !opts.security || pathname === '/healthz' || pathname === '/readyz' || (req.method === 'GET' && pathname === '/fhir/metadata');
    let principal: Principal | undefined;
    const authenticated = open
      ? Promise.resolve()
      : opts.security!.authenticate(headers, remoteAddress).then((p) => {
          principal = p;
        });
    authenticated
      .then(() => readBody(req, limit))
      .then(async (body) => {
        const url = requestUrl(req.url ?? '/');
        if (url instanceof OutcomeError) {
          await auditRefusal(req, url.status, principal);
          throw url;
        }
        return handle({
          method: req.method ?? 'GET',
          path: url.pathname.replace(/\/+$/, '') || '/',
          query: url.searchParams,
          headers,
          body,
          remoteAddress,
          principal,
        });
      })
      .then(done, async (err) => {
        if (err instanceof OutcomeError && (err.category === 'too-large' || ((err.category === 'unauthorized' || err.category === 'rate-limited') && !principal))) {
          // the body was not read (or not all of it): this connection cannot carry another request
          res.setHeader('Connection', 'close');
          if (err.category === 'too-large') await auditRefusal(req, 413, principal);
        }
        fail(err);
      });
  });
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  // requests are accepted only now, so no request ever sees the placeholder base
  apiOpts.baseUrl = opts.baseUrl ?? defaultFhirBase(opts.host, port);

  return {
    port,
    baseUrl: apiOpts.baseUrl,
    server,
    fhir,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (inFlight > 0) await new Promise<void>((resolve) => (idle = resolve));
      server.closeAllConnections();
      await closed;
    },
  };
}

/**
 * The request target as a URL, or the 400 it gets when it cannot be read as the client meant it: a percent escape
 * that is not `%` and two hex digits (`%zz`, `%A` at the end), escapes that do not spell UTF-8 (`%E0%A4`), or a NUL
 * character (`%00`), in the path or the query. `URL` leaves a bad escape in the path as it is (decoding it later
 * threw, a 500) and URLSearchParams turns it into U+FFFD or keeps it literally, so the search would silently run
 * on other text; PostgreSQL cannot store or compare a NUL.
 */
export function requestUrl(target: string): URL | OutcomeError {
  let url: URL;
  try {
    url = new URL(target, 'http://localhost');
  } catch {
    return new OutcomeError('invalid-query', 'the request URL cannot be parsed', 'url');
  }
  for (const [part, raw] of [['path', url.pathname], ['query', url.search.slice(1)]] as const) {
    if (!raw.includes('%')) continue;
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      return new OutcomeError(
        'invalid-query',
        `the request URL's ${part} has a malformed percent escape: each % must be followed by two hex digits, and the escaped bytes must be UTF-8 (write a literal % as %25)`,
        'url',
      );
    }
    if (decoded.includes('\0')) return new OutcomeError('invalid-query', `the request URL's ${part} contains a NUL character (%00), which no FHIR value can hold`, 'url');
  }
  return url;
}

/** Reads the request body, refusing (413) past the limit without buffering the rest. */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > max) {
      req.resume();
      reject(new OutcomeError('too-large', `the body is ${declared} bytes; the limit is ${max}`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.removeAllListeners('data');
        req.resume();
        reject(new OutcomeError('too-large', `the body exceeds the limit of ${max} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
