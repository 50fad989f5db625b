/**
 * Configuration from the environment (the public contract: README "Configuration").
 * Read once at start; nothing else reads process.env.
 */
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_JSON_LIMITS, type JsonLimits } from './fhir/json.js';

export interface Config {
  port: number;
  host: string;
  mllpPort: number;
  dataDir: string;
  /** PGLITE_SHARED_BUFFERS: the embedded store's page cache (PostgreSQL's shared_buffers), e.g. 32MB */
  pgliteSharedBuffers: string;
  databaseUrl?: string;
  /** BASE_URL, or undefined: then http://HOST:PORT/fhir with the port actually bound (see fhirBase) */
  baseUrl?: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** largest HTTP request body accepted, bytes (413 past it) */
  maxBodyBytes: number;
  /** bounds of a FHIR JSON body within maxBodyBytes: nesting, array length, values, Bundle entries (src/fhir/json.ts) */
  jsonLimits: JsonLimits;
  /** largest social-care export accepted by POST /social-care/{source}, bytes */
  socialCareMaxBytes: number;
  /** a folder of municipal export mappings searched before mappings/social (SOCIAL_MAPPINGS_DIR) */
  socialMappingsDir?: string;
  /** a folder of HL7 v2 mappings (messages/, resources/, codes/) searched before mappings/hl7v2 (HL7_MAPPINGS_DIR) */
  hl7MappingsDir?: string;
  /** largest HL7 v2 message accepted over MLLP, bytes (AR and close past it) */
  mllpMaxMessageBytes: number;
  /** an MLLP connection silent this long is closed, ms (MLLP_IDLE_TIMEOUT_S; 0 = never) */
  mllpIdleTimeoutMs: number;
  /** open MLLP connections one address may hold (MLLP_MAX_CONNECTIONS_PER_ADDRESS; 0 = no cap) */
  mllpMaxConnectionsPerAddress: number;
  /** charset assumed when MSH-18 is empty (Baltic senders often use windows-1257) */
  hl7DefaultCharset: string;
  /** zone for HL7 v2 timestamps that carry no UTC offset */
  hl7DefaultTimezone: string;
  /** when an HL7 v2 AA goes back: after the plan commit (default) or after storage, conversion and checks */
  hl7AckAfter: 'commit' | 'conversion';
  /** bearer-token authentication (SMART Backend Services); undefined = off (allowed on loopback only) */
  auth?: { jwks: string; issuers: string[]; audience?: string; ratePerSecond: number; maxLifetimeS: number; failuresPerMinute: number };
  /** a file holding the secret that signs the audit chain's head (AUDIT_KEY_FILE); kept outside the database */
  auditKeyFile?: string;
  /** MLLP senders allowed (MLLP_ALLOWED_SENDERS: APP|FACILITY@ADDRESS,…); undefined = any (loopback only) */
  mllpAllowedSenders?: string;
  /** MLLP over TLS: PEM files (MLLP_TLS_CERT, MLLP_TLS_KEY; MLLP_TLS_CA turns on client certificates) */
  mllpTls?: { cert: string; key: string; ca?: string };
  /** worker threads for municipal imports on PostgreSQL (IMPORT_WORKERS; 0: the lanes run in the process) */
  importWorkers: number;
  /** page size when a search names no _count */
  defaultPageSize: number;
  maxPageSize: number;
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

function oneOf<T extends string>(env: NodeJS.ProcessEnv, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = raw.toLowerCase() as T;
  if (!allowed.includes(v)) throw new Error(`${name} must be ${allowed.join('|')}, got "${raw}"`);
  return v;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = int(env, 'PORT', 8080);
  const host = env.HOST || '127.0.0.1';
  const level = (env.LOG_LEVEL || 'info').toLowerCase();
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new Error(`LOG_LEVEL must be debug|info|warn|error, got "${level}"`);
  return {
    port,
    host,
    mllpPort: int(env, 'MLLP_PORT', 2575),
    dataDir: path.resolve(env.DATA_DIR || './data'),
    pgliteSharedBuffers: sharedBuffers(env),
    databaseUrl: env.DATABASE_URL || undefined,
    baseUrl: env.BASE_URL ? env.BASE_URL.replace(/\/+$/, '') : undefined,
    logLevel: level as Config['logLevel'],
    maxBodyBytes: int(env, 'MAX_BODY_BYTES', 10 * 1024 * 1024),
    jsonLimits: jsonLimits(env),
    socialCareMaxBytes: int(env, 'SOCIAL_CARE_MAX_BYTES', 256 * 1024 * 1024),
    socialMappingsDir: env.SOCIAL_MAPPINGS_DIR ? path.resolve(env.SOCIAL_MAPPINGS_DIR) : undefined,
    hl7MappingsDir: env.HL7_MAPPINGS_DIR ? path.resolve(env.HL7_MAPPINGS_DIR) : undefined,
    mllpMaxMessageBytes: int(env, 'MLLP_MAX_MESSAGE_BYTES', 4 * 1024 * 1024),
    mllpIdleTimeoutMs: int(env, 'MLLP_IDLE_TIMEOUT_S', 600) * 1000,
    mllpMaxConnectionsPerAddress: int(env, 'MLLP_MAX_CONNECTIONS_PER_ADDRESS', 32),
    hl7DefaultCharset: env.HL7_DEFAULT_CHARSET || 'utf-8',
    hl7DefaultTimezone: env.HL7_DEFAULT_TIMEZONE || 'Europe/Tallinn',
    hl7AckAfter: oneOf(env, 'HL7_ACK_AFTER', ['commit', 'conversion'] as const, 'commit'),
    auth: env.AUTH_JWKS
      ? {
          jwks: env.AUTH_JWKS,
          issuers: (env.AUTH_ISSUERS ?? '').split(/[\s,]+/).filter(Boolean),
          audience: env.AUTH_AUDIENCE || undefined,
          ratePerSecond: int(env, 'RATE_LIMIT', 50),
          failuresPerMinute: int(env, 'AUTH_FAILURES_PER_MINUTE', 300),
          maxLifetimeS: maxTokenLifetime(env),
        }
      : undefined,
    auditKeyFile: env.AUDIT_KEY_FILE ? path.resolve(env.AUDIT_KEY_FILE) : undefined,
    mllpAllowedSenders: env.MLLP_ALLOWED_SENDERS || undefined,
    mllpTls: env.MLLP_TLS_CERT || env.MLLP_TLS_KEY ? mllpTls(env) : undefined,
    importWorkers: importWorkers(env),
    defaultPageSize: int(env, 'DEFAULT_PAGE_SIZE', 20),
    maxPageSize: int(env, 'MAX_PAGE_SIZE', 1000),
  };
}

/**
 * Import workers (src/social/workers.ts): none below four cores (on two they ran no faster than the lanes in the
 * process); from four, one a core but the process's own, at most four (a lane keeps about one core busy: its
 * thread and its database backend take turns). At most 8 when set.
 */
export function defaultImportWorkers(cores = os.availableParallelism()): number {
  return cores >= 4 ? Math.min(4, cores - 1) : 0;
}

function importWorkers(env: NodeJS.ProcessEnv): number {
  const n = int(env, 'IMPORT_WORKERS', defaultImportWorkers());
  if (n > 8) throw new Error(`IMPORT_WORKERS must be at most 8, got ${n}`);
  return n;
}

/**
 * PGLITE_SHARED_BUFFERS: 32MB. Starting the embedded database costs about 4 ms a megabyte of it (the WebAssembly heap
 * is set up for all of it): PostgreSQL's default 128MB took ~0.4 s of a ~2 s start, and served no faster (the MLLP
 * and API benchmarks on the embedded store, run with both: docs/benchmarks.md).
 */
function sharedBuffers(env: NodeJS.ProcessEnv): string {
  const raw = env.PGLITE_SHARED_BUFFERS || '32MB';
  const m = /^(\d+)(kB|MB|GB)$/.exec(raw);
  const kb = m ? Number(m[1]) * { kB: 1, MB: 1024, GB: 1024 * 1024 }[m[2] as 'kB' | 'MB' | 'GB'] : NaN;
  if (!(kb >= 1024 && kb <= 4 * 1024 * 1024)) throw new Error(`PGLITE_SHARED_BUFFERS must be a size from 1MB to 4GB such as 128MB, got "${raw}"`);
  return raw;
}

/** AUTH_MAX_TOKEN_LIFETIME: the longest bearer-token lifetime (exp - iat) accepted, seconds; at least 1. */
function maxTokenLifetime(env: NodeJS.ProcessEnv): number {
  const n = int(env, 'AUTH_MAX_TOKEN_LIFETIME', 3600);
  if (n < 1) throw new Error(`AUTH_MAX_TOKEN_LIFETIME must be at least 1 (seconds), got ${n}`);
  return n;
}

/** MAX_JSON_DEPTH (1–1000: deeper would risk the recursive walks after parsing), MAX_ARRAY_LENGTH, MAX_JSON_VALUES, MAX_BUNDLE_ENTRIES; none may be 0. */
function jsonLimits(env: NodeJS.ProcessEnv): JsonLimits {
  const positive = (name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number => {
    const n = int(env, name, fallback);
    if (n < 1 || n > max) throw new Error(`${name} must be between 1 and ${max}, got ${n}`);
    return n;
  };
  return {
    maxDepth: positive('MAX_JSON_DEPTH', DEFAULT_JSON_LIMITS.maxDepth, 1000),
    maxArray: positive('MAX_ARRAY_LENGTH', DEFAULT_JSON_LIMITS.maxArray),
    maxElements: positive('MAX_JSON_VALUES', DEFAULT_JSON_LIMITS.maxElements),
    maxBundleEntries: positive('MAX_BUNDLE_ENTRIES', DEFAULT_JSON_LIMITS.maxBundleEntries),
  };
}

function mllpTls(env: NodeJS.ProcessEnv): Config['mllpTls'] {
  if (!env.MLLP_TLS_CERT || !env.MLLP_TLS_KEY) throw new Error('MLLP over TLS needs both MLLP_TLS_CERT and MLLP_TLS_KEY (PEM files)');
  return { cert: path.resolve(env.MLLP_TLS_CERT), key: path.resolve(env.MLLP_TLS_KEY), ...(env.MLLP_TLS_CA ? { ca: path.resolve(env.MLLP_TLS_CA) } : {}) };
}

/** The default FHIR base, http://HOST:PORT/fhir, with the port the server really listens on. */
export function defaultFhirBase(host: string, boundPort: number): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return `http://${h}:${boundPort}/fhir`;
}
