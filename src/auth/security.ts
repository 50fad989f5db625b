/**
 * The security edge: bearer authentication (jwt.ts), a token bucket per client (429), and the start-up rule
 * "no authentication only on loopback". Built from the AUTH_* / RATE_LIMIT environment (config.ts).
 */
import { OutcomeError } from '../fhir/outcome.js';
import { TokenVerifier, type AuthConfig, type OrgKind, type Principal } from './jwt.js';

export interface SecurityConfig extends AuthConfig {
  /** requests per second per client (burst: twice that); 0 = no limit */
  ratePerSecond: number;
}

export class Security {
  private readonly verifier: TokenVerifier;
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly cfg: SecurityConfig) {
    this.verifier = new TokenVerifier(cfg);
  }

  /** The caller of a request: 401 without a valid bearer token. */
  async authenticate(headers: Record<string, string | undefined>): Promise<Principal> {
    const h = headers['authorization'] ?? '';
    const m = /^Bearer\s+([A-Za-z0-9\-_.]+)$/i.exec(h.trim());
    if (!m) throw new OutcomeError('unauthorized', 'a bearer token is required (Authorization: Bearer …)');
    const p = await this.verifier.verify(m[1]);
    this.take(p.clientId || p.organization);
    return p;
  }

  private take(client: string): void {
    const rate = this.cfg.ratePerSecond;
    if (!rate) return;
    const now = Date.now();
    const b = this.buckets.get(client) ?? { tokens: rate * 2, at: now };
    b.tokens = Math.min(rate * 2, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    if (b.tokens < 1) {
      this.buckets.set(client, b);
      throw new OutcomeError('rate-limited', `too many requests from client ${client}; the limit is ${rate} per second`);
    }
    b.tokens -= 1;
    this.buckets.set(client, b);
  }

  /** 403 unless the caller is of one of these kinds. */
  static requireKind(p: Principal, kinds: OrgKind[], what: string): void {
    if (!kinds.includes(p.kind)) throw new OutcomeError('forbidden', `${what} is for ${kinds.join(' or ')} callers, not ${p.kind}`);
  }
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
