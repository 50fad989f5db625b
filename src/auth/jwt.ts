/**
 * Bearer tokens as in SMART Backend Services: a JWT (JWS compact serialisation) verified with the `jose` library
 * against the configured JWKS, from a trusted issuer (`iss`), for this server (`aud`), within `exp`/`nbf` (60 s
 * skew), issued (`iat`) no more than the maximum token lifetime before it expires (AUTH_MAX_TOKEN_LIFETIME,
 * default 3600 s).
 *
 * Keys: the JWKS is a file or an https:// URL (plain http is refused when the verifier is built).
 *   - a file is checked (inode, size, mtime) at most once a second and re-read when it changed, so a key removed
 *     from it stops verifying, and a key added to it verifies, without a restart; a file that cannot be read or
 *     parsed verifies nothing until it can (fail closed)
 *   - a URL is fetched by jose's remote JWKS set: cached for `jwksTtlMs` (5 minutes), and a token naming a key
 *     that is not in it makes one refetch, at most once per cooldown (30 s), so issuers can rotate keys without an
 *     unknown `kid` costing a fetch per request; a failed fetch is retried after 5 s, not on every request
 * A key is used only for the algorithm it fits: RSA keys (2048 bits or more) for RS256/RS384/RS512, EC P-256 for
 * ES256, EC P-384 for ES384; a JWK's `alg`, when present, must equal the token's; a JWK whose `use` is other than
 * `sig` (or whose `key_ops` lack `verify`) is never used.
 *
 * Tokens: the header must be a JSON object with `alg` one of RS256, RS384, RS512, ES256, ES384 (`none`, HMAC
 * and anything else are refused), an optional string `kid`, and no `crit`; every part must be canonical base64url
 * (no padding, no stray trailing bits).
 *
 * Claims care-gateway reads (docs in README "Security"); each must have the type given, or the token is refused:
 *   iss                a string, one of the trusted issuers
 *   aud                a string or an array of strings, naming this server
 *   exp, iat           numbers (seconds), both required; exp - iat at most the maximum lifetime; nbf optional
 *   scope              a string: SMART v1 or v2 system scopes, e.g. `system/CarePlan.read system/*.rs`
 *   organization       a string: the calling organisation's Business Register code (8 digits)
 *   organization_kind  a string: hospital | gp | municipality | coordinator
 *   sub, client_id     strings: the client (or user) id; `name` / `user` optional, for the audit trail
 *   clearance          optional: confidentiality codes (v3-Confidentiality) the caller is cleared for, e.g. `R`;
 *                      an array of strings or a space-separated string. Data labelled `R` (restricted: child
 *                      protection, special welfare) is seen only with `R` or `V`, data labelled `V` only with `V`.
 *
 * @see https://hl7.org/fhir/smart-app-launch/backend-services.html, RFC 7515, RFC 7517, RFC 7519
 */
import fs from 'node:fs';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  jwtVerify,
  type FetchImplementation,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose';
import { OutcomeError } from '../fhir/outcome.js';

export type OrgKind = 'hospital' | 'gp' | 'municipality' | 'coordinator';
export const ORG_KINDS: OrgKind[] = ['hospital', 'gp', 'municipality', 'coordinator'];

export interface Principal {
  clientId: string;
  user?: string;
  organization: string;
  kind: OrgKind;
  scopes: Scope[];
  issuer: string;
  /** confidentiality codes the caller is cleared for (claim `clearance`) */
  clearance: string[];
}

export interface Scope {
  /** `*` or a resource type */
  type: string;
  /** c r u d s */
  ops: Set<string>;
}

/** The signature algorithms accepted (a Set: no prototype lookups for names like `__proto__`). */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'ES384'] as const;
const ALGORITHM_SET: ReadonlySet<string> = new Set(ALGORITHMS);
const SKEW_S = 60;

export interface AuthConfig {
  /** path of a JWKS file, or an https:// URL */
  jwks: string;
  issuers: string[];
  audience: string;
  /** longest accepted token lifetime (exp - iat), seconds; default 3600 (AUTH_MAX_TOKEN_LIFETIME) */
  maxLifetimeS?: number;
  /** how long a fetched JWKS (URL) is trusted, ms; default 5 minutes */
  jwksTtlMs?: number;
  /** after a fetch of the JWKS URL, how long before an unknown key may make another, ms; default 30 s */
  jwksCooldownMs?: number;
  /** how often a JWKS file is checked for changes, at most, ms; default 1000 */
  jwksCheckIntervalMs?: number;
  /** how the JWKS URL is fetched (tests); default the global fetch */
  jwksFetch?: FetchImplementation;
}

/** SMART scopes: v1 `system/Type.read|write|*`, v2 `system/Type.cruds` (any subset, in order). */
export function parseScopes(scope: string): Scope[] {
  const out: Scope[] = [];
  for (const s of scope.split(/\s+/).filter(Boolean)) {
    const m = /^(?:system|user|patient)\/([A-Za-z]+|\*)\.(read|write|\*|c?r?u?d?s?)$/.exec(s);
    if (!m || m[2] === '') continue;
    const ops = m[2] === 'read' ? 'rs' : m[2] === 'write' ? 'cud' : m[2] === '*' ? 'cruds' : m[2];
    out.push({ type: m[1], ops: new Set(ops) });
  }
  return out;
}

/** Does the principal's scope allow `op` (c r u d s) on `type`? */
export function allows(p: Principal, type: string, op: 'c' | 'r' | 'u' | 'd' | 's'): boolean {
  return p.scopes.some((s) => (s.type === '*' || s.type === type) && s.ops.has(op));
}

/** A refusal: 401, saying why (never echoing the token). */
function deny(why: string): never {
  throw new OutcomeError('unauthorized', `invalid bearer token: ${why}`);
}

/** The bytes of a canonical base64url string (no padding, no non-zero trailing bits), else undefined. */
function base64urlStrict(s: string): Buffer | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(s) || s.length % 4 === 1) return undefined;
  const bytes = Buffer.from(s, 'base64url');
  return bytes.toString('base64url') === s ? bytes : undefined;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A header or claim value fit to quote in a refusal (a short identifier or URL, no spaces or quotes), or a placeholder. */
function quote(v: unknown): string {
  return typeof v === 'string' && /^[\w.:/~%?#@+=&-]{1,128}$/.test(v) ? v : '(unprintable)';
}

type KeySource = () => Promise<JWTVerifyGetKey>;

/**
 * A JWKS file: its keys are re-read when its inode, size, mtime or ctime changed, checked at most once per
 * interval. A file that cannot be read or is not a JWKS leaves no keys (every token is refused) until it is fixed.
 */
function fileKeys(file: string, intervalMs: number): KeySource {
  let keys: JWTVerifyGetKey | undefined;
  let failure: string | undefined;
  let signature = '';
  let checkedAt = -Infinity;
  let checking: Promise<void> | undefined;
  const check = async (): Promise<void> => {
    const fh = await fs.promises.open(file, 'r');
    try {
      const st = await fh.stat();
      const sig = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      if (sig === signature && keys) return;
      const text = await fh.readFile('utf8');
      keys = createLocalJWKSet(JSON.parse(text) as Parameters<typeof createLocalJWKSet>[0]);
      signature = sig;
      failure = undefined;
    } finally {
      await fh.close();
    }
  };
  return async () => {
    if (Date.now() - checkedAt >= intervalMs) {
      checking ??= check()
        .catch(() => {
          keys = undefined;
          signature = '';
          failure = 'the configured JWKS file cannot be read or is not a JWKS';
        })
        .finally(() => {
          checkedAt = Date.now();
          checking = undefined;
        });
      await checking;
    }
    if (!keys) deny(failure ?? 'no JWKS loaded');
    return keys;
  };
}

/** The JWKS URL did not answer (or answered other than 200) a moment ago. */
class JwksUnavailable extends Error {
  readonly code = 'CG_JWKS_UNAVAILABLE';
}

/**
 * A JWKS URL (https only), through jose's remote JWKS set: cached, refetched for an unknown key after a cooldown.
 * A failed fetch is not retried for 5 s (or the cooldown, if shorter): jose would otherwise fetch again for every
 * request while the URL is down.
 */
function remoteKeys(url: URL, cfg: AuthConfig): KeySource {
  const cooldownMs = cfg.jwksCooldownMs ?? 30_000;
  const retryMs = Math.min(5000, cooldownMs);
  const doFetch: FetchImplementation = cfg.jwksFetch ?? ((href, init) => fetch(href, init));
  let failedAt = -Infinity;
  const gatedFetch: FetchImplementation = async (href, init) => {
    if (Date.now() - failedAt < retryMs) throw new JwksUnavailable('the JWKS URL failed a moment ago');
    let res: Response;
    try {
      res = await doFetch(href, init);
    } catch {
      failedAt = Date.now();
      throw new JwksUnavailable('the JWKS URL cannot be reached');
    }
    if (res.status !== 200) failedAt = Date.now();
    return res;
  };
  const keys = createRemoteJWKSet(url, {
    cacheMaxAge: cfg.jwksTtlMs ?? 5 * 60_000,
    cooldownDuration: cooldownMs,
    timeoutDuration: 5000,
    [customFetch]: gatedFetch,
  });
  return async () => keys;
}

/** jose's refusals, in words (its messages hold no token content, but ours are steadier). */
function reason(err: unknown, header: Record<string, unknown>): string {
  const code = (err as { code?: unknown })?.code;
  const claim = (err as { claim?: unknown })?.claim;
  switch (code) {
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'signature does not verify';
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return `no key ${header.kid === undefined ? '' : `${quote(header.kid)} `}for ${quote(header.alg)} in the configured JWKS`;
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (claim === 'nbf') return 'not valid yet (nbf)';
      if ((err as { reason?: unknown }).reason === 'missing') return `${String(claim)} is required`;
      return `${String(claim)} is not valid`;
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'algorithm or header not accepted';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return `malformed token (${(err as Error).message})`;
    case 'ERR_JWKS_INVALID':
    case 'ERR_JWK_INVALID':
      return 'the configured JWKS holds no usable key for this token';
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JOSE_GENERIC':
    case 'CG_JWKS_UNAVAILABLE':
      return 'the configured JWKS could not be fetched';
    default:
      return 'the token could not be verified';
  }
}

export class TokenVerifier {
  private readonly keys: KeySource;
  private readonly maxLifetimeS: number;

  /** Throws when the JWKS is neither a file path nor an https:// URL, or the lifetime is not a positive number. */
  constructor(private readonly cfg: AuthConfig) {
    this.maxLifetimeS = cfg.maxLifetimeS ?? 3600;
    if (!Number.isFinite(this.maxLifetimeS) || this.maxLifetimeS <= 0) throw new Error(`the maximum token lifetime must be a positive number of seconds, got ${cfg.maxLifetimeS}`);
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(cfg.jwks)?.[1]?.toLowerCase();
    if (scheme === undefined) this.keys = fileKeys(cfg.jwks, cfg.jwksCheckIntervalMs ?? 1000);
    else if (scheme === 'https') this.keys = remoteKeys(new URL(cfg.jwks), cfg);
    else throw new Error(`AUTH_JWKS must be a file path or an https:// URL; ${scheme}:// is refused (keys fetched without TLS could be replaced in transit)`);
  }

  /** Verifies a bearer token; every refusal is a 401 OutcomeError saying why (never echoing the token). */
  async verify(token: string, now = Date.now()): Promise<Principal> {
    if (typeof token !== 'string') deny('not a JWS compact serialisation');
    const parts = token.split('.');
    if (parts.length !== 3) deny('not a JWS compact serialisation');
    const bytes = parts.map(base64urlStrict);
    if (bytes.some((b) => b === undefined)) deny('a part is not canonical base64url');
    if (bytes[2]!.length === 0) deny('the signature is missing');
    let header: unknown;
    try {
      header = JSON.parse(utf8.decode(bytes[0]));
    } catch {
      deny('the header is not base64url JSON');
    }
    if (!isPlainObject(header)) deny('the header is not a JSON object');
    if (typeof header.alg !== 'string' || !ALGORITHM_SET.has(header.alg)) {
      deny(`algorithm ${quote(header.alg)} is not accepted (${ALGORITHMS.join(', ')})`);
    }
    if (Object.hasOwn(header, 'crit')) deny('critical header parameters (crit) are not accepted');
    if (header.kid !== undefined && typeof header.kid !== 'string') deny('kid must be a string');

    const options: JWTVerifyOptions = {
      algorithms: [...ALGORITHMS],
      clockTolerance: SKEW_S,
      currentDate: new Date(now),
      requiredClaims: ['exp', 'iat'],
    };
    let claims: JWTPayload;
    try {
      claims = await this.signedClaims(token, await this.keys(), options);
    } catch (err) {
      if (err instanceof OutcomeError) throw err;
      deny(reason(err, header));
    }
    return this.principal(claims, now);
  }

  /** jose's verification: signature with a key that fits, exp/nbf/iat; a token without kid may match several keys. */
  private async signedClaims(token: string, keys: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTPayload> {
    try {
      return (await jwtVerify(token, keys, options)).payload;
    } catch (err) {
      if ((err as { code?: unknown })?.code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw err;
      let last: unknown = err;
      for await (const key of err as AsyncIterable<CryptoKey>) {
        try {
          return (await jwtVerify(token, key, options)).payload;
        } catch (e) {
          last = e;
          if ((e as { code?: unknown })?.code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') throw e;
        }
      }
      throw last;
    }
  }

  /** The claims of a verified token, checked for type and meaning. */
  private principal(claims: JWTPayload, now: number): Principal {
    const c = claims as Record<string, unknown>;
    for (const name of ['iss', 'sub', 'client_id', 'scope', 'organization', 'organization_kind'] as const) {
      if (c[name] !== undefined && typeof c[name] !== 'string') deny(`${name} must be a string`);
    }
    for (const name of ['exp', 'iat', 'nbf'] as const) {
      if (c[name] !== undefined && !Number.isFinite(c[name])) deny(`${name} must be a finite number`);
    }
    const t = now / 1000;
    const exp = c.exp as number;
    const iat = c.iat as number;
    if (iat > t + SKEW_S) deny('issued in the future (iat)');
    if (exp - iat > this.maxLifetimeS || exp - t > this.maxLifetimeS + SKEW_S) deny(`token lifetime exceeds ${this.maxLifetimeS} s`);
    if (typeof c.iss !== 'string' || !this.cfg.issuers.includes(c.iss)) deny(`issuer ${quote(c.iss)} is not trusted`);
    const aud = typeof c.aud === 'string' ? [c.aud] : Array.isArray(c.aud) && c.aud.every((a) => typeof a === 'string') ? (c.aud as string[]) : undefined;
    if (!aud) deny('aud must be a string or an array of strings');
    if (!aud.includes(this.cfg.audience)) deny(`audience is not ${this.cfg.audience}`);
    const organization = c.organization as string | undefined;
    if (organization === undefined || !/^\d{8}$/.test(organization)) deny('the organization claim (a Business Register code) is missing');
    const kind = c.organization_kind as OrgKind | undefined;
    if (kind === undefined || !ORG_KINDS.includes(kind)) deny(`organization_kind must be one of ${ORG_KINDS.join(', ')}`);
    let clearance: string[];
    if (c.clearance === undefined) clearance = [];
    else if (typeof c.clearance === 'string') clearance = c.clearance.split(/\s+/).filter(Boolean);
    else if (Array.isArray(c.clearance) && c.clearance.every((x) => typeof x === 'string')) clearance = (c.clearance as string[]).filter(Boolean);
    else deny('clearance must be a string or an array of strings');
    return {
      clientId: (c.client_id as string | undefined) ?? (c.sub as string | undefined) ?? '',
      user: typeof c.user === 'string' ? c.user : typeof c.name === 'string' ? c.name : undefined,
      organization,
      kind,
      scopes: parseScopes((c.scope as string | undefined) ?? ''),
      issuer: c.iss,
      clearance,
    };
  }
}
