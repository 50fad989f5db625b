/**
 * A trial set-up with authentication on: `care-gateway dev-keys DIR` makes an RSA key pair, writes the public JWKS
 * (`DIR/jwks.json`, what AUTH_JWKS names) and the private key (`DIR/dev-issuer.pem`, which a real issuer would keep),
 * and signs a token for each kind of caller — a hospital, a GP practice, a municipality and the county coordinator
 * (`DIR/tokens.env`, and printed). For trials only: the tokens live `AUTH_MAX_TOKEN_LIFETIME` at most (one hour by
 * default); run it again for new ones (the key stays if DIR has one).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const DEV_ISSUER = 'https://dev-issuer.care-gateway.invalid';

/** The trial callers: registry codes of the test fixtures' organisations (mappings/facilities.yaml, the directory). */
const CALLERS: { name: string; organization: string; kind: string; clearance?: string }[] = [
  { name: 'HOSPITAL', organization: '90006399', kind: 'hospital' },
  { name: 'GP', organization: '10856624', kind: 'gp' },
  { name: 'MUNICIPALITY', organization: '75006546', kind: 'municipality' },
  { name: 'COORDINATOR', organization: '70000007', kind: 'coordinator', clearance: 'R' },
];

export function devKeys(dir: string, audience: string, lifetimeS = 3600): { jwks: string; tokens: Record<string, string> } {
  fs.mkdirSync(dir, { recursive: true });
  const pem = path.join(dir, 'dev-issuer.pem');
  const privateKey = fs.existsSync(pem)
    ? crypto.createPrivateKey(fs.readFileSync(pem))
    : (() => {
        const k = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
        fs.writeFileSync(pem, k.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
        return k;
      })();
  const jwk = crypto.createPublicKey(privateKey).export({ format: 'jwk' });
  const jwks = path.join(dir, 'jwks.json');
  fs.writeFileSync(jwks, JSON.stringify({ keys: [{ ...jwk, kid: 'dev-1', alg: 'RS256', use: 'sig' }] }, null, 2));
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const tokens: Record<string, string> = {};
  for (const c of CALLERS) {
    const claims = { iss: DEV_ISSUER, aud: audience, sub: `dev-${c.kind}`, iat: now, exp: now + lifetimeS, scope: 'system/*.cruds', organization: c.organization, organization_kind: c.kind, ...(c.clearance ? { clearance: c.clearance } : {}) };
    const data = `${b64({ alg: 'RS256', typ: 'JWT', kid: 'dev-1' })}.${b64(claims)}`;
    tokens[c.name] = `${data}.${crypto.sign('sha256', Buffer.from(data), privateKey).toString('base64url')}`;
  }
  fs.writeFileSync(path.join(dir, 'tokens.env'), Object.entries(tokens).map(([k, v]) => `${k}_TOKEN=${v}`).join('\n') + '\n', { mode: 0o600 });
  return { jwks, tokens };
}
