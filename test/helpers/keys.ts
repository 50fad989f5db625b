/**
 * RSA key pairs for the suites' tokens, made once per machine and kept beside the store templates (a 2048-bit key
 * costs ~0.3 s to make, and a dozen suites made their own at every run). Test keys only: nothing but the tests'
 * own gateways trusts them. Two workers making the same one at once each keep theirs; the last file stays.
 */
import crypto, { type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { STORE_ROOT } from './backends.js';

const DIR = path.join(STORE_ROOT, 'cg-test-keys');

export function testKeyPair(name: string): { privateKey: KeyObject; publicKey: KeyObject } {
  const file = path.join(DIR, `${name}.pem`);
  let pem: string;
  try {
    pem = fs.readFileSync(file, 'utf8');
  } catch {
    pem = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    fs.mkdirSync(DIR, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, pem);
    fs.renameSync(tmp, file);
  }
  const privateKey = crypto.createPrivateKey(pem);
  return { privateKey, publicKey: crypto.createPublicKey(privateKey) };
}
