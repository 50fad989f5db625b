/**
 * Bearer-token verification (src/auth/jwt.ts) with real keys made here (RSA 2048, EC P-256, EC P-384) and a JWKS
 * file in a temp folder: positive controls, key rotation in the file without a restart, the refetch cooldown of a
 * JWKS URL, https only, the algorithm allow-list and key/algorithm fit, `crit`, `iat`/`exp`/lifetime/skew, claim
 * types, strict base64url and malformed headers. Every refusal is a 401 OutcomeError that does not echo the token.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { TokenVerifier, type AuthConfig } from '../../src/auth/jwt.js';
import { loadConfig } from '../../src/config.js';
import { testKeyPair } from '../helpers/keys.js';

const ISSUER = 'https://auth.tartumaa.test';
const AUDIENCE = 'https://gateway.test/fhir';
const HOSPITAL = '90006399';

const rsa1 = testKeyPair('rsa1');
const rsa2 = testKeyPair('rsa2');
const rsaFree = testKeyPair('rsaFree'); // a JWK with neither alg nor use
const rsaEnc = testKeyPair('rsaEnc'); // published for encryption only
const stranger = testKeyPair('stranger'); // in no JWKS
const ec256 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ec384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });

const jwk = (k: crypto.KeyObject, extra: Record<string, unknown>) => ({ ...k.export({ format: 'jwk' }), ...extra });
const K1 = jwk(rsa1.publicKey, { kid: 'k1', alg: 'RS256', use: 'sig' });
const K2 = jwk(rsa2.publicKey, { kid: 'k2', alg: 'RS256', use: 'sig' });
const FREE = jwk(rsaFree.publicKey, { kid: 'free' });
const ENC = jwk(rsaEnc.publicKey, { kid: 'enc', use: 'enc' });
const E256 = jwk(ec256.publicKey, { kid: 'e256', use: 'sig' });
const E384 = jwk(ec384.publicKey, { kid: 'e384', alg: 'ES384' });

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-jwt-'));
const jwksFile = path.join(dir, 'jwks.json');
let fakeMtime = 1_700_000_000;
/** Writes the JWKS file and gives it a new (fake) mtime, so a change is seen whatever the file system's clock. */
function writeJwks(keys: unknown[]): void {
  fs.writeFileSync(jwksFile, JSON.stringify({ keys }));
  fakeMtime += 10;
  fs.utimesSync(jwksFile, fakeMtime, fakeMtime);
}

const nowS = () => Math.floor(Date.now() / 1000);
const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  iss: ISSUER,
  aud: AUDIENCE,
  sub: 'client-elva-his',
  iat: nowS(),
  exp: nowS() + 300,
  scope: 'system/*.rs system/Goal.cruds',
  organization: HOSPITAL,
  organization_kind: 'hospital',
  ...extra,
});

/** A valid token through jose. */
const sign = (alg: string, kid: string | undefined, key: crypto.KeyObject, payload: Record<string, unknown> = claims()) =>
  new SignJWT(payload).setProtectedHeader(kid === undefined ? { alg } : { alg, kid }).sign(key);

const b64 = (s: string) => Buffer.from(s).toString('base64url');
const HASH: Record<string, string> = { RS256: 'sha256', RS384: 'sha384', RS512: 'sha512', ES256: 'sha256', ES384: 'sha384' };
/** A token built by hand: header and payload as raw JSON text, signed with `key` by the hash of `signAs`. */
function handSign(header: string, payload: string, key: crypto.KeyObject, signAs = 'RS256'): string {
  const data = `${b64(header)}.${b64(payload)}`;
  const k = key.asymmetricKeyType === 'ec' ? { key, dsaEncoding: 'ieee-p1363' as const } : key;
  return `${data}.${crypto.sign(HASH[signAs], Buffer.from(data), k).toString('base64url')}`;
}
const hdr = (h: Record<string, unknown>) => JSON.stringify(h);

const config = (extra: Partial<AuthConfig> = {}): AuthConfig => ({ jwks: jwksFile, issuers: [ISSUER], audience: AUDIENCE, ...extra });

/** Expects a 401 OutcomeError whose text matches `why` and holds neither the token nor its signature. */
async function refused(verifier: TokenVerifier, token: string, why: RegExp, now?: number): Promise<void> {
  let err: unknown;
  try {
    await verifier.verify(token, now);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(OutcomeError);
  const o = err as OutcomeError;
  expect([o.category, o.status]).toEqual(['unauthorized', 401]);
  expect(o.message).toMatch(/^invalid bearer token: /);
  expect(o.message).toMatch(why);
  if (token.length > 8) expect(o.message).not.toContain(token);
  const sig = token.split('.')[2];
  if (sig && sig.length > 8) expect(o.message).not.toContain(sig);
}

beforeEach(() => writeJwks([K1, FREE, ENC, E256, E384]));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('positive controls', () => {
  test('a valid RS256 token yields the right Principal', async () => {
    const v = new TokenVerifier(config());
    const token = await sign('RS256', 'k1', rsa1.privateKey, claims({ user: 'Dr Tamm', clearance: ['R'] }));
    expect(await v.verify(token)).toEqual({
      clientId: 'client-elva-his',
      user: 'Dr Tamm',
      organization: HOSPITAL,
      kind: 'hospital',
      scopes: [
        { type: '*', ops: new Set(['r', 's']) },
        { type: 'Goal', ops: new Set(['c', 'r', 'u', 'd', 's']) },
      ],
      issuer: ISSUER,
      clearance: ['R'],
    });
  });

  test('a valid ES256 token yields the right Principal (client_id, name, space-separated clearance, aud array)', async () => {
    const v = new TokenVerifier(config());
    const payload = claims({ client_id: 'tartu-sotsiaal', name: 'Sotsiaaltöötaja', organization: '75006546', organization_kind: 'municipality', clearance: 'R V', aud: ['https://other.test', AUDIENCE] });
    const p = await v.verify(await sign('ES256', 'e256', ec256.privateKey, payload));
    expect(p).toMatchObject({ clientId: 'tartu-sotsiaal', user: 'Sotsiaaltöötaja', organization: '75006546', kind: 'municipality', issuer: ISSUER, clearance: ['R', 'V'] });
  });

  test('ES384, RS384 and RS512 verify with keys that fit; a token without kid finds its key among several', async () => {
    const v = new TokenVerifier(config());
    expect((await v.verify(await sign('ES384', 'e384', ec384.privateKey))).kind).toBe('hospital');
    expect((await v.verify(await sign('RS384', 'free', rsaFree.privateKey))).kind).toBe('hospital');
    expect((await v.verify(await sign('RS512', 'free', rsaFree.privateKey))).kind).toBe('hospital');
    // no kid: k1 and `free` both fit RS256; each is tried
    expect((await v.verify(await sign('RS256', undefined, rsaFree.privateKey))).kind).toBe('hospital');
    expect((await v.verify(await sign('RS256', undefined, rsa1.privateKey))).kind).toBe('hospital');
    await refused(v, await sign('RS256', undefined, stranger.privateKey), /signature does not verify/);
  });
});

describe('JWKS file: rotation without restart', () => {
  test('k1 removed and k2 added: a k1 token is refused and a k2 token verifies, within the check interval', async () => {
    const v = new TokenVerifier(config()); // default: the file is checked at most once a second
    const t1 = await sign('RS256', 'k1', rsa1.privateKey);
    const t2 = await sign('RS256', 'k2', rsa2.privateKey);
    expect((await v.verify(t1)).organization).toBe(HOSPITAL);
    await refused(v, t2, /no key k2 for RS256/);
    writeJwks([K2, E256]); // same size as before for k1 → k2 alone would be; the mtime tells
    await new Promise((r) => setTimeout(r, 1100));
    await refused(v, t1, /no key k1 for RS256/);
    expect((await v.verify(t2)).organization).toBe(HOSPITAL);
    // and back, once more
    writeJwks([K1]);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await v.verify(t1)).organization).toBe(HOSPITAL);
    await refused(v, t2, /no key k2/);
  });

  test('a same-size rewrite is seen by its mtime; with a short interval at once', async () => {
    writeJwks([K1]);
    const v = new TokenVerifier(config({ jwksCheckIntervalMs: 0 }));
    const t1 = await sign('RS256', 'k1', rsa1.privateKey);
    expect((await v.verify(t1)).kind).toBe('hospital');
    const size = fs.statSync(jwksFile).size;
    writeJwks([{ ...K2, kid: 'k1' }]); // another key under the same kid: same length of file
    expect(fs.statSync(jwksFile).size).toBe(size);
    await refused(v, t1, /signature does not verify/);
    expect((await v.verify(await sign('RS256', 'k1', rsa2.privateKey))).kind).toBe('hospital');
  });

  test('a file that is gone or not a JWKS verifies nothing (fail closed) until it is fixed', async () => {
    const v = new TokenVerifier(config({ jwksCheckIntervalMs: 0 }));
    const t1 = await sign('RS256', 'k1', rsa1.privateKey);
    expect((await v.verify(t1)).kind).toBe('hospital');
    fs.writeFileSync(jwksFile, '{"keys": [');
    await refused(v, t1, /JWKS file cannot be read or is not a JWKS/);
    fs.rmSync(jwksFile);
    await refused(v, t1, /JWKS file cannot be read/);
    writeJwks([K1]);
    expect((await v.verify(t1)).kind).toBe('hospital');
  });
});

describe('JWKS URL', () => {
  const URL_ = 'https://auth.tartumaa.test/.well-known/jwks.json';
  function server(keys: () => unknown[]) {
    const calls: string[] = [];
    const jwksFetch = async (url: string) => {
      calls.push(url);
      return new Response(JSON.stringify({ keys: keys() }), { status: 200, headers: { 'Content-Type': 'application/json' } });
    };
    return { calls, jwksFetch };
  }

  test('http:// (and other schemes) are refused when the verifier is built', () => {
    for (const jwks of ['http://auth.tartumaa.test/jwks.json', 'HTTP://auth.tartumaa.test/jwks.json', 'ftp://auth.tartumaa.test/jwks.json', 'file:///jwks.json']) {
      expect(() => new TokenVerifier(config({ jwks }))).toThrow(/file path or an https:\/\/ URL/);
    }
    expect(() => new TokenVerifier(config({ jwks: URL_ }))).not.toThrow();
  });

  test('an unknown kid does not refetch on every request: one fetch per cooldown (default 30 s)', async () => {
    const { calls, jwksFetch } = server(() => [K1]);
    const v = new TokenVerifier(config({ jwks: URL_, jwksFetch }));
    expect((await v.verify(await sign('RS256', 'k1', rsa1.privateKey))).kind).toBe('hospital');
    expect(calls).toEqual([URL_]);
    for (let i = 0; i < 20; i++) await refused(v, await sign('RS256', `unknown-${i}`, stranger.privateKey), /no key unknown-\d+ for RS256/);
    await Promise.all(Array.from({ length: 20 }, async () => refused(v, await sign('RS256', 'k9', stranger.privateKey), /no key k9/)));
    expect(calls).toHaveLength(1);
  });

  test('a rotated key is fetched once the cooldown has passed, and only once', async () => {
    let keys: unknown[] = [K1];
    const { calls, jwksFetch } = server(() => keys);
    const v = new TokenVerifier(config({ jwks: URL_, jwksFetch, jwksCooldownMs: 300 }));
    const t2 = await sign('RS256', 'k2', rsa2.privateKey);
    await refused(v, t2, /no key k2/); // first fetch; right after it, the cooldown holds
    expect(calls).toHaveLength(1);
    keys = [K2];
    await refused(v, t2, /no key k2/);
    expect(calls).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 350));
    expect((await v.verify(t2)).kind).toBe('hospital');
    expect(calls).toHaveLength(2);
    await refused(v, await sign('RS256', 'k1', rsa1.privateKey), /no key k1/); // k1 is gone; cooling down again
    await refused(v, await sign('RS256', 'k3', stranger.privateKey), /no key k3/);
    expect(calls).toHaveLength(2);
  });

  test('a JWKS URL that does not answer 200, or not at all, verifies nothing and is not asked again at once', async () => {
    let calls = 0;
    let answer: () => Promise<Response> = async () => new Response('nope', { status: 503 });
    const jwksFetch = async () => {
      calls++;
      return answer();
    };
    const v = new TokenVerifier(config({ jwks: URL_, jwksFetch, jwksCooldownMs: 300 }));
    const t1 = await sign('RS256', 'k1', rsa1.privateKey);
    for (let i = 0; i < 10; i++) await refused(v, t1, /JWKS could not be fetched/);
    expect(calls).toBe(1);
    answer = async () => {
      throw new TypeError('fetch failed');
    };
    await new Promise((r) => setTimeout(r, 350));
    for (let i = 0; i < 10; i++) await refused(v, t1, /JWKS could not be fetched/);
    expect(calls).toBe(2);
    answer = async () => new Response(JSON.stringify({ keys: [K1] }), { status: 200 });
    await new Promise((r) => setTimeout(r, 350));
    expect((await v.verify(t1)).kind).toBe('hospital');
    expect(calls).toBe(3);
  });
});

describe('algorithms and keys', () => {
  test('alg outside the allow-list: __proto__, constructor, none, HS256 and others → 401', async () => {
    const v = new TokenVerifier(config());
    const payload = JSON.stringify(claims());
    for (const alg of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'none', 'None', 'HS256', 'HS384', 'ES512', 'EdDSA', 'PS512', 'rs256', '', 'RS256 ']) {
      await refused(v, handSign(hdr({ alg, kid: 'k1' }), payload, rsa1.privateKey), /algorithm .* is not accepted/);
    }
    for (const h of ['{"kid":"k1"}', '{"alg":null,"kid":"k1"}', '{"alg":["RS256"],"kid":"k1"}', '{"alg":{"RS256":1},"kid":"k1"}', '{"__proto__":{"alg":"RS256"},"kid":"k1"}']) {
      await refused(v, handSign(h, payload, rsa1.privateKey), /algorithm .* is not accepted/);
    }
    // alg none with no signature, and HMAC keyed with the RSA public key (the classic confusion)
    await refused(v, `${b64(hdr({ alg: 'none' }))}.${b64(payload)}.`, /signature is missing/);
    const data = `${b64(hdr({ alg: 'HS256', kid: 'k1' }))}.${b64(payload)}`;
    const mac = crypto.createHmac('sha256', rsa1.publicKey.export({ format: 'pem', type: 'spki' })).update(data).digest('base64url');
    await refused(v, `${data}.${mac}`, /algorithm HS256 is not accepted/);
  });

  test('the key must fit the alg: RSA only for RS*, P-256 only for ES256, P-384 only for ES384', async () => {
    const v = new TokenVerifier(config());
    const payload = JSON.stringify(claims());
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 'e256' }), payload, rsa1.privateKey), /no key e256 for RS256/);
    await refused(v, handSign(hdr({ alg: 'ES256', kid: 'k1' }), payload, ec256.privateKey, 'ES256'), /no key k1 for ES256/);
    await refused(v, handSign(hdr({ alg: 'ES256', kid: 'e384' }), payload, ec384.privateKey, 'ES256'), /no key e384 for ES256/);
    await refused(v, handSign(hdr({ alg: 'ES384', kid: 'e256' }), payload, ec256.privateKey, 'ES384'), /no key e256 for ES384/);
    // with no kid either: nothing of the right kind
    await refused(v, handSign(hdr({ alg: 'ES256' }), payload, ec384.privateKey, 'ES256'), /signature does not verify|no key/);
    // the controls: the same keys with their own algorithms
    expect((await v.verify(handSign(hdr({ alg: 'ES256', kid: 'e256' }), payload, ec256.privateKey, 'ES256'))).kind).toBe('hospital');
    expect((await v.verify(handSign(hdr({ alg: 'ES384', kid: 'e384' }), payload, ec384.privateKey, 'ES384'))).kind).toBe('hospital');
  });

  test("a JWK's alg must equal the header's; a JWK with use other than sig is never used", async () => {
    const v = new TokenVerifier(config());
    const payload = JSON.stringify(claims());
    await refused(v, handSign(hdr({ alg: 'RS384', kid: 'k1' }), payload, rsa1.privateKey, 'RS384'), /no key k1 for RS384/); // k1 says RS256
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 'enc' }), payload, rsaEnc.privateKey), /no key enc for RS256/);
    writeJwks([{ ...K1, use: 'enc' }]);
    await refused(new TokenVerifier(config()), handSign(hdr({ alg: 'RS256', kid: 'k1' }), payload, rsa1.privateKey), /no key k1/);
    writeJwks([{ ...K1, key_ops: ['encrypt'] }]);
    await refused(new TokenVerifier(config()), handSign(hdr({ alg: 'RS256', kid: 'k1' }), payload, rsa1.privateKey), /no key k1/);
  });

  test('a forged signature, and a kid that is not a string, are refused', async () => {
    const v = new TokenVerifier(config());
    await refused(v, await sign('RS256', 'k1', stranger.privateKey), /signature does not verify/);
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 1 }), JSON.stringify(claims()), rsa1.privateKey), /kid must be a string/);
  });
});

describe('crit', () => {
  test('any crit header is refused, also the b64 extension jose itself knows', async () => {
    const v = new TokenVerifier(config());
    const payload = JSON.stringify(claims());
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 'k1', crit: ['urn:example:must-understand'], 'urn:example:must-understand': 1 }), payload, rsa1.privateKey), /crit/);
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 'k1', crit: ['exp'], exp: 1 }), payload, rsa1.privateKey), /crit/);
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 'k1', crit: [] }), payload, rsa1.privateKey), /crit/);
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 'k1', crit: null }), payload, rsa1.privateKey), /crit/);
    // RFC 7797: b64 false, the payload unencoded in the signing input
    const h = b64(hdr({ alg: 'RS256', kid: 'k1', b64: false, crit: ['b64'] }));
    const sig = crypto.sign('sha256', Buffer.from(`${h}.${payload}`), rsa1.privateKey).toString('base64url');
    await refused(v, `${h}.${b64(payload)}.${sig}`, /crit/);
    await refused(v, `${h}..${sig}`, /crit/);
  });
});

describe('lifetime: iat and exp required, exp - iat at most the maximum, 60 s skew', () => {
  const rs = (payload: Record<string, unknown>) => handSign(hdr({ alg: 'RS256', kid: 'k1' }), JSON.stringify(payload), rsa1.privateKey);
  const without = (name: string) => {
    const c = claims();
    delete c[name];
    return c;
  };

  test('iat and exp are required and must be numbers', async () => {
    const v = new TokenVerifier(config());
    await refused(v, rs(without('iat')), /iat is required/);
    await refused(v, rs(without('exp')), /exp is required/);
    await refused(v, rs(claims({ iat: String(nowS()) })), /iat is not valid/);
    await refused(v, rs(claims({ exp: null })), /exp is not valid/);
    // 1e400 parses as Infinity
    await refused(v, handSign(hdr({ alg: 'RS256', kid: 'k1' }), JSON.stringify(claims()).replace(/"exp":\d+/, '"exp":1e400'), rsa1.privateKey), /exp must be a finite number|lifetime/);
  });

  test('exp in the year 2999, or exp - iat over 3600 s, is refused', async () => {
    const v = new TokenVerifier(config());
    await refused(v, rs(claims({ exp: 32503680000 })), /token lifetime exceeds 3600 s/);
    await refused(v, rs({ ...without('iat'), exp: 32503680000 }), /iat is required/);
    await refused(v, rs(claims({ iat: nowS() - 100, exp: nowS() + 3600 })), /token lifetime exceeds 3600 s/);
    await refused(v, rs(claims({ iat: nowS() + 3600, exp: nowS() + 3700 })), /issued in the future/);
    expect((await v.verify(rs(claims({ iat: nowS() - 100, exp: nowS() + 3500 })))).kind).toBe('hospital');
  });

  test('the maximum is configurable (AUTH_MAX_TOKEN_LIFETIME)', async () => {
    const v = new TokenVerifier(config({ maxLifetimeS: 600 }));
    await refused(v, rs(claims({ exp: nowS() + 900 })), /token lifetime exceeds 600 s/);
    expect((await v.verify(rs(claims({ exp: nowS() + 600 })))).kind).toBe('hospital');
    expect(() => new TokenVerifier(config({ maxLifetimeS: 0 }))).toThrow(/positive/);
    expect(loadConfig({ AUTH_JWKS: jwksFile, AUTH_ISSUERS: ISSUER }).auth!.maxLifetimeS).toBe(3600);
    expect(loadConfig({ AUTH_JWKS: jwksFile, AUTH_ISSUERS: ISSUER, AUTH_MAX_TOKEN_LIFETIME: '600' }).auth!.maxLifetimeS).toBe(600);
    expect(() => loadConfig({ AUTH_JWKS: jwksFile, AUTH_MAX_TOKEN_LIFETIME: '0' })).toThrow(/AUTH_MAX_TOKEN_LIFETIME must be at least 1/);
    expect(() => loadConfig({ AUTH_JWKS: jwksFile, AUTH_MAX_TOKEN_LIFETIME: '1h' })).toThrow(/AUTH_MAX_TOKEN_LIFETIME must be a non-negative integer/);
  });

  test('exp and nbf with 60 s of skew', async () => {
    const v = new TokenVerifier(config());
    const t = nowS();
    const token = rs(claims({ iat: t - 200, exp: t - 100 + 300, nbf: t - 200 })); // valid until t + 200
    expect((await v.verify(token, (t + 230) * 1000)).kind).toBe('hospital');
    await refused(v, token, /expired/, (t + 270) * 1000);
    const later = rs(claims({ iat: t, exp: t + 300, nbf: t + 100 }));
    expect((await v.verify(later, (t + 50) * 1000)).kind).toBe('hospital');
    await refused(v, later, /not valid yet \(nbf\)/, (t + 30) * 1000);
    await refused(v, rs(claims({ iat: t + 120, exp: t + 400 })), /issued in the future/, t * 1000);
  });
});

describe('claim types', () => {
  const rs = (extra: Record<string, unknown>) => sign('RS256', 'k1', rsa1.privateKey, claims(extra));

  test('iss, organization, organization_kind, sub, client_id and scope must be strings', async () => {
    const v = new TokenVerifier(config());
    await refused(v, await rs({ iss: [ISSUER] }), /iss must be a string/);
    await refused(v, await rs({ organization: [HOSPITAL] }), /organization must be a string/);
    await refused(v, await rs({ organization: 90006399 }), /organization must be a string/);
    await refused(v, await rs({ organization_kind: ['hospital'] }), /organization_kind must be a string/);
    await refused(v, await rs({ sub: 42 }), /sub must be a string/);
    await refused(v, await rs({ client_id: { id: 'x' } }), /client_id must be a string/);
    await refused(v, await rs({ scope: ['system/*.cruds'] }), /scope must be a string/);
    await refused(v, await rs({ clearance: { R: true } }), /clearance must be a string or an array of strings/);
    await refused(v, await rs({ clearance: ['R', 1] }), /clearance must be a string or an array of strings/);
  });

  test('aud is a string or an array of strings naming this server; iss one of the trusted', async () => {
    const v = new TokenVerifier(config());
    expect((await v.verify(await rs({ aud: [AUDIENCE] }))).kind).toBe('hospital');
    await refused(v, await rs({ aud: [AUDIENCE, 7] }), /aud must be a string or an array of strings/);
    await refused(v, await rs({ aud: { [AUDIENCE]: true } }), /aud must be/);
    await refused(v, await rs({ aud: 'https://other.test/fhir' }), /audience is not/);
    await refused(v, await rs({ aud: undefined }), /aud must be/);
    await refused(v, await rs({ iss: 'https://evil.test' }), /issuer https:\/\/evil.test is not trusted/);
    await refused(v, await rs({ iss: undefined }), /issuer .* is not trusted/);
    await refused(v, await rs({ organization: '9000639' }), /organization claim/);
    await refused(v, await rs({ organization_kind: 'pharmacy' }), /organization_kind must be one of/);
  });
});

describe('strict base64url', () => {
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  /** The same bytes, spelled with a different last character (only the unused trailing bits differ). */
  const flipTrailingBit = (s: string) => s.slice(0, -1) + ALPHABET[ALPHABET.indexOf(s.at(-1)!) ^ 1];
  const withPart = (token: string, i: number, f: (s: string) => string) => token.split('.').map((p, j) => (j === i ? f(p) : p)).join('.');

  test('altered trailing bits, padding, base64 (not url) characters and whitespace are refused', async () => {
    const v = new TokenVerifier(config());
    for (const [alg, kid, key] of [['RS256', 'k1', rsa1.privateKey], ['ES256', 'e256', ec256.privateKey]] as const) {
      const token = await sign(alg, kid, key);
      expect((await v.verify(token)).kind).toBe('hospital');
      const sig = token.split('.')[2];
      expect(sig.length % 4).not.toBe(0); // there are trailing bits to alter
      const altered = withPart(token, 2, flipTrailingBit);
      expect(Buffer.from(altered.split('.')[2], 'base64url').equals(Buffer.from(sig, 'base64url'))).toBe(true); // a lax decoder sees the same signature
      await refused(v, altered, /not canonical base64url/);
      await refused(v, withPart(token, 2, (s) => `${s}==`), /not canonical base64url/);
      await refused(v, withPart(token, 2, (s) => `${s}=`), /not canonical base64url/);
      await refused(v, withPart(token, 2, (s) => s.replace(/-/g, '+').replace(/_/g, '/') + (/[-_]/.test(s) ? '' : '+')), /not canonical base64url/);
      await refused(v, withPart(token, 2, (s) => `${s.slice(0, 10)} ${s.slice(10)}`), /not canonical base64url/);
      await refused(v, withPart(token, 2, (s) => `${s}A`), /not canonical base64url|signature does not verify/);
    }
    // trailing bits of the header and the payload too
    const token = await sign('RS256', 'k1', rsa1.privateKey, claims({ sub: 'x' }));
    for (const i of [0, 1]) {
      const part = token.split('.')[i];
      if (part.length % 4 !== 0) await refused(v, withPart(token, i, flipTrailingBit), /not canonical base64url/);
      await refused(v, withPart(token, i, (s) => `${s}=`), /not canonical base64url/);
    }
  });
});

describe('malformed tokens: 401, never 500', () => {
  test('a header that is null, not an object or not JSON; claims that are not an object', async () => {
    const v = new TokenVerifier(config());
    const payload = JSON.stringify(claims());
    for (const h of ['null', '[]', '["RS256"]', '"RS256"', '123', 'true', '']) {
      await refused(v, handSign(h, payload, rsa1.privateKey), /the header is not (a JSON object|base64url JSON)/);
    }
    await refused(v, handSign('{"alg":"RS256",', payload, rsa1.privateKey), /the header is not base64url JSON/);
    const badUtf8 = `${Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]).toString('base64url')}.${b64(payload)}.AAAA`;
    await refused(v, badUtf8, /the header is not base64url JSON/);
    for (const p of ['null', '[]', '"claims"', '42', '{"iss":']) {
      await refused(v, handSign(hdr({ alg: 'RS256', kid: 'k1' }), p, rsa1.privateKey), /malformed token/);
    }
    for (const t of ['', 'not.a.token', 'abc', 'a.b', 'a.b.c.d', '...', 'eyJhbGciOiJSUzI1NiJ9..']) {
      await refused(v, t, /not a JWS compact serialisation|base64url|signature is missing|header/);
    }
  });
});
