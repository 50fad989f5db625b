/**
 * A gateway with authentication on, for the security suites: RSA keys made here, a JWKS file, signed tokens for
 * each kind of caller, and two people discharged by the hospital — A living in Elva vald, B in Tartu linn.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, Patient } from '@medplum/fhirtypes';
import type { Gateway } from '../../src/app.js';
import { tempDir, type Backend } from './backends.js';
import { startTestGateway } from './gateway.js';
import { testKeyPair } from './keys.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';
import { isikukoodCheckDigit } from '../../src/fhir/identifiers.js';

export const NI = 'https://fhir.ee/sid/pid/est/ni';
export const ISSUER = 'https://auth.tartumaa.test';
export const HOSPITAL = '90006399'; // Elva hospital (mappings/facilities.yaml)
export const GP = '10856624'; // Elva family practice
export const TARTU = '75006546'; // Tartu linn (mappings/social/tartu-linn.yaml)

/** A Business Register code with its check digit (the 7-3-1 weights of the Estonian registry). */
export function registryCode(seven: string): string {
  const d = [...seven].map(Number);
  const mod = (w: number[]) => d.reduce((s, x, i) => s + x * w[i], 0) % 11;
  let c = mod([1, 2, 3, 4, 5, 6, 7]);
  if (c === 10) c = mod([3, 4, 5, 6, 7, 8, 9]);
  if (c === 10) c = 0;
  return seven + c;
}
export const ELVA = '77000170'; // Elva vald (mappings/directory), also given in the test mapping
export const COUNTY = registryCode('7000000');
export const ik = (ten: string) => ten + isikukoodCheckDigit(ten);

const { privateKey, publicKey } = testKeyPair('issuer');
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** An RS256 token signed by the test key (kid k1). */
export function sign(claims: Record<string, unknown>): string {
  const data = `${b64({ alg: 'RS256', typ: 'JWT', kid: 'k1' })}.${b64(claims)}`;
  return `${data}.${crypto.sign('sha256', Buffer.from(data), privateKey).toString('base64url')}`;
}

export type Role = 'hospital' | 'gp' | 'muniA' | 'muniB' | 'coordinator';

export interface SecuredGateway {
  gw: Gateway;
  base: string;
  url: string;
  tokens: Record<Role, string>;
  claims(organization: string, kind: string, scope?: string, extra?: Record<string, unknown>): Record<string, unknown>;
  call(p: string, who?: string, init?: RequestInit): Promise<Response>;
  patientIdOf(isikukood: string): Promise<string>;
  close(): Promise<void>;
}

/** Starts the gateway on `backend` with authentication on and the hospital's discharges of `people` ([isikukood, EHAK]). */
export async function startSecuredGateway(backend: Backend, people: [string, string][], extraEnv: Record<string, string> = {}): Promise<SecuredGateway> {
  const dir = tempDir('cg-sec-');
  fs.writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' }] }));
  fs.mkdirSync(path.join(dir, 'maps'));
  fs.writeFileSync(
    path.join(dir, 'maps', 'elva-test.yaml'),
    `municipality: { ehak: "0171", registryCode: "${ELVA}" }\nfields: { decisionId: a, isikukood: b, service: c, start: d, note: e }\nmaps: { services: { x: home-care, y: child-case-management } }\n`,
  );
  const { gw, base, url } = await startTestGateway(backend, { AUTH_JWKS: path.join(dir, 'jwks.json'), AUTH_ISSUERS: ISSUER, SOCIAL_MAPPINGS_DIR: path.join(dir, 'maps'), RATE_LIMIT: '0', ...extraEnv });
  const claims = (organization: string, kind: string, scope = 'system/*.cruds', extra: Record<string, unknown> = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return { iss: ISSUER, aud: base, sub: `client-${kind}-${organization}`, iat: now, exp: now + 600, scope, organization, organization_kind: kind, ...extra };
  };
  const tokens: Record<Role, string> = {
    hospital: sign(claims(HOSPITAL, 'hospital')),
    gp: sign(claims(GP, 'gp')),
    muniA: sign(claims(TARTU, 'municipality')),
    muniB: sign(claims(ELVA, 'municipality')),
    coordinator: sign(claims(COUNTY, 'coordinator', 'system/*.cruds', { clearance: 'R' })),
  };
  let n = 0;
  for (const [who, ehak] of people) {
    const ctl = `SEC-${++n}`;
    const res = await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain', Authorization: `Bearer ${tokens.hospital}` }, body: eeDischarge({ controlId: ctl, isikukood: who, ehak, visit: `V-${ctl}` }) });
    const ack = await res.text();
    if (!ack.includes('MSA|AA')) throw new Error(`discharge ${ctl} not accepted: ${ack}`);
  }
  const call = (p: string, who?: string, init: RequestInit = {}) =>
    fetch(`${base}${p}`, { ...init, headers: { 'Content-Type': 'application/fhir+json', ...(who ? { Authorization: `Bearer ${who}` } : {}), ...(init.headers ?? {}) } });
  const patientIdOf = async (isikukood: string) => {
    const b = (await (await call(`/Patient?identifier=${NI}|${isikukood}`, tokens.coordinator)).json()) as Bundle;
    return (b.entry![0].resource as Patient).id!;
  };
  return {
    gw,
    base,
    url,
    tokens,
    claims,
    call,
    patientIdOf,
    async close() {
      await gw.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
