/**
 * The security edge: bearer authentication (jwt.ts), token buckets (429), refusals counted per address, and the
 * start-up rule "no authentication only on loopback". Built from the AUTH_* / RATE_LIMIT environment (config.ts).
 *
 * Requests without a valid token cost little and leave little: the token is checked before the body is read
 * (api/http.ts); an address whose failed attempts exhaust its bucket is refused (429) before its tokens are
 * verified; and refusals are audited in aggregate — one AuditEvent per address and minute with the count and the
 * reasons — not one row each, so a flood cannot fill the audit trail.
 */
import { OutcomeError } from '../fhir/outcome.js';
import { TokenVerifier, type AuthConfig, type OrgKind, type Principal } from './jwt.js';

export interface SecurityConfig extends AuthConfig {
  /** requests per second per client (burst: twice that); 0 = no limit */
  ratePerSecond: number;
  /** failed authentications an address may make per minute before it is refused unverified (burst: 4 s worth); default 300 */
  failuresPerMinute?: number;
}

/** Refused authentications from one address in one minute. */
export interface RefusalSummary {
  address: string;
  /** start of the minute, ISO */
  minute: string;
  count: number;
  /** reason → count */
  reasons: Record<string, number>;
}

const MAX_BUCKETS = 10_000;

export class Security {
  private readonly verifier: TokenVerifier;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly refusals = new Map<string, RefusalSummary>();

  constructor(private readonly cfg: SecurityConfig) {
    this.verifier = new TokenVerifier(cfg);
  }

  /**
   * The caller of a request: 401 without a valid bearer token, 429 past the client's rate or, before any
   * verification, when its address has failed too often.
   */
  async authenticate(headers: Record<string, string | undefined>, address = ''): Promise<Principal> {
    const addressKey = `address ${address}`;
    const failures = (this.cfg.failuresPerMinute ?? 300) / 60;
    if (!this.has(addressKey, failures)) {
      this.refused(address, 'rate-limited (failed authentications)');
      throw new OutcomeError('rate-limited', `too many failed authentications from ${address || 'this address'}; wait and try again`);
    }
    let p: Principal;
    try {
      const h = headers['authorization'] ?? '';
      const m = /^Bearer\s+([A-Za-z0-9\-_.]+)$/i.exec(h.trim());
      if (!m) throw new OutcomeError('unauthorized', 'a bearer token is required (Authorization: Bearer …)');
      p = await this.verifier.verify(m[1]);
    } catch (err) {
      this.take(addressKey, failures);
      this.refused(address, err instanceof OutcomeError ? err.message.replace(/^invalid bearer token: /, '').slice(0, 120) : 'error');
      throw err;
    }
    if (this.cfg.ratePerSecond && !this.take(`client ${p.clientId || p.organization}`, this.cfg.ratePerSecond)) {
      throw new OutcomeError('rate-limited', `too many requests from client ${p.clientId || p.organization}; the limit is ${this.cfg.ratePerSecond} per second`);
    }
    return p;
  }

  /** Does the bucket have a token (without taking it)? */
  private has(key: string, rate: number): boolean {
    const b = this.refill(key, rate);
    return b.tokens >= 1;
  }

  /** Takes a token; false when the bucket is empty. */
  private take(key: string, rate: number): boolean {
    const b = this.refill(key, rate);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  private refill(key: string, rate: number): { tokens: number; at: number } {
    const now = Date.now();
    const burst = rate * (key.startsWith('address ') ? 4 : 2);
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= MAX_BUCKETS) this.prune(now);
      b = { tokens: burst, at: now };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    return b;
  }

  /** Buckets untouched for a minute are full again: forget them (the map stays bounded whoever calls). */
  private prune(now: number): void {
    for (const [k, b] of this.buckets) if (now - b.at > 60_000) this.buckets.delete(k);
    if (this.buckets.size >= MAX_BUCKETS) this.buckets.clear();
  }

  private refused(address: string, reason: string): void {
    const minute = new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString();
    const key = `${address}|${minute}`;
    let s = this.refusals.get(key);
    if (!s) {
      if (this.refusals.size >= MAX_BUCKETS) return; // counted in the summaries already open; the rest only in logs
      s = { address, minute, count: 0, reasons: {} };
      this.refusals.set(key, s);
    }
    s.count++;
    if (Object.keys(s.reasons).length < 20 || reason in s.reasons) s.reasons[reason] = (s.reasons[reason] ?? 0) + 1;
  }

  /** The refusal summaries of minutes that have ended (all of them with `all`), removed from the counter. */
  takeRefusals(all = false): RefusalSummary[] {
    const current = new Date(Math.floor(Date.now() / 60_000) * 60_000).toISOString();
    const out: RefusalSummary[] = [];
    for (const [k, s] of this.refusals) {
      if (all || s.minute < current) {
        out.push(s);
        this.refusals.delete(k);
      }
    }
    return out;
  }

  /** 403 unless the caller is of one of these kinds. */
  static requireKind(p: Principal, kinds: OrgKind[], what: string): void {
    if (!kinds.includes(p.kind)) throw new OutcomeError('forbidden', `${what} is for ${kinds.join(' or ')} callers, not ${p.kind}`);
  }
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
