/**
 * Bearer tokens as in SMART Backend Services: a JWT signed with RS256/RS384/RS512/ES256/ES384 by a key in the
 * configured JWKS (a file, or an https URL fetched and cached; a token naming an unknown `kid` makes one refetch,
 * so keys can rotate), from a trusted issuer (`iss`), for this server (`aud`), within `exp`/`nbf` (60 s skew).
 * `alg: none` and HMAC algorithms are refused: only asymmetric keys verify here.
 *
 * Claims care-gateway reads (docs in README "Security"):
 *   scope              SMART v1 or v2 system scopes, e.g. `system/CarePlan.read system/*.rs`
 *   organization       the calling organisation's Business Register code (8 digits)
 *   organization_kind  hospital | gp | municipality | coordinator
 *   sub                the client (or user) id; `name` / `user` optional, for the audit trail
 *   clearance          optional: confidentiality codes (v3-Confidentiality) the caller is cleared for, e.g. `R`;
 *                      an array or a space-separated string. Data labelled `R` (restricted: child protection,
 *                      special welfare) is seen only with `R` or `V`, data labelled `V` only with `V`.
 *
 * @see https://hl7.org/fhir/smart-app-launch/backend-services.html, RFC 7515, RFC 7517, RFC 7519
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
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

const ALGS: Record<string, { hash: string; ec?: boolean }> = {
  RS256: { hash: 'sha256' },
  RS384: { hash: 'sha384' },
  RS512: { hash: 'sha512' },
  ES256: { hash: 'sha256', ec: true },
  ES384: { hash: 'sha384', ec: true },
};
const SKEW_S = 60;

export interface AuthConfig {
  /** path of a JWKS file, or an https:// URL */
  jwks: string;
  issuers: string[];
  audience: string;
  /** how long a fetched JWKS is trusted, ms */
  jwksTtlMs?: number;
}

interface Jwk {
  kid?: string;
  kty: string;
  alg?: string;
  use?: string;
  [k: string]: unknown;
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

export class TokenVerifier {
  private keys: Jwk[] = [];
  private loadedAt = 0;
  private loading: Promise<void> | undefined;

  constructor(private readonly cfg: AuthConfig) {}

  private async load(force = false): Promise<void> {
    const ttl = this.cfg.jwksTtlMs ?? 5 * 60_000;
    if (!force && this.keys.length && Date.now() - this.loadedAt < ttl) return;
    this.loading ??= (async () => {
      try {
        let doc: { keys?: Jwk[] };
        if (/^https?:\/\//.test(this.cfg.jwks)) {
          const res = await fetch(this.cfg.jwks, { signal: AbortSignal.timeout(5000) });
          if (!res.ok) throw new Error(`JWKS ${this.cfg.jwks} answered ${res.status}`);
          doc = (await res.json()) as { keys?: Jwk[] };
        } else doc = JSON.parse(fs.readFileSync(this.cfg.jwks, 'utf8')) as { keys?: Jwk[] };
        this.keys = (doc.keys ?? []).filter((k) => k.kty === 'RSA' || k.kty === 'EC');
        this.loadedAt = Date.now();
      } finally {
        this.loading = undefined;
      }
    })();
    await this.loading;
  }

  /** Verifies a bearer token; every refusal is a 401 OutcomeError saying why (never echoing the token). */
  async verify(token: string, now = Date.now()): Promise<Principal> {
    const deny = (why: string): never => {
      throw new OutcomeError('unauthorized', `invalid bearer token: ${why}`);
    };
    const parts = token.split('.');
    if (parts.length !== 3) deny('not a JWS compact serialisation');
    let header: { alg?: string; kid?: string; typ?: string };
    let claims: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8')) as typeof header;
      claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as Record<string, unknown>;
    } catch {
      return deny('header or claims are not base64url JSON');
    }
    const alg = ALGS[header.alg ?? ''];
    if (!alg) deny(`algorithm ${header.alg ?? '(none)'} is not accepted (RS256, RS384, RS512, ES256, ES384)`);
    await this.load();
    let candidates = this.keys.filter((k) => (header.kid ? k.kid === header.kid : true) && (!k.alg || k.alg === header.alg) && k.use !== 'enc');
    if (candidates.length === 0 && header.kid) {
      await this.load(true); // key rotation: the issuer may have published a new key
      candidates = this.keys.filter((k) => k.kid === header.kid);
    }
    if (candidates.length === 0) deny(`no key ${header.kid ?? ''} in the configured JWKS`);
    const data = Buffer.from(`${parts[0]}.${parts[1]}`);
    const sig = Buffer.from(parts[2], 'base64url');
    const ok = candidates.some((jwk) => {
      try {
        const key = crypto.createPublicKey({ key: jwk as crypto.JsonWebKey, format: 'jwk' });
        return crypto.verify(alg!.hash, data, alg!.ec ? { key, dsaEncoding: 'ieee-p1363' } : key, sig);
      } catch {
        return false;
      }
    });
    if (!ok) deny('signature does not verify');
    const t = now / 1000;
    if (typeof claims.exp !== 'number') deny('exp is required');
    if ((claims.exp as number) + SKEW_S < t) deny('expired');
    if (typeof claims.nbf === 'number' && (claims.nbf as number) - SKEW_S > t) deny('not valid yet (nbf)');
    if (!this.cfg.issuers.includes(String(claims.iss))) deny(`issuer ${String(claims.iss)} is not trusted`);
    const aud = Array.isArray(claims.aud) ? claims.aud.map(String) : [String(claims.aud)];
    if (!aud.includes(this.cfg.audience)) deny(`audience is not ${this.cfg.audience}`);
    const organization = String(claims.organization ?? '');
    if (!/^\d{8}$/.test(organization)) deny('the organization claim (a Business Register code) is missing');
    const kind = String(claims.organization_kind ?? '') as OrgKind;
    if (!ORG_KINDS.includes(kind)) deny(`organization_kind must be one of ${ORG_KINDS.join(', ')}`);
    return {
      clientId: String(claims.client_id ?? claims.sub ?? ''),
      user: typeof claims.user === 'string' ? claims.user : typeof claims.name === 'string' ? claims.name : undefined,
      organization,
      kind,
      scopes: parseScopes(String(claims.scope ?? '')),
      issuer: String(claims.iss),
      clearance: (Array.isArray(claims.clearance) ? claims.clearance.map(String) : String(claims.clearance ?? '').split(/\s+/)).filter(Boolean),
    };
  }
}
