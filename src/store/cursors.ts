/**
 * Paging cursors for callers who do not see everything are sealed (AES-256-GCM): a cursor names the last row a page
 * read, which may be a resource the caller may not see (its type, id, time), so the caller gets it only encrypted
 * and authenticated. The key is a secret every instance shares (`server_secret`, made by schema migration 11), so a
 * cursor from one instance works on another.
 */
import crypto from 'node:crypto';
import { OutcomeError } from '../fhir/outcome.js';
import type { Queryable } from './db.js';

let key: Promise<Buffer> | undefined;

function cursorKey(q: Queryable): Promise<Buffer> {
  key ??= q
    .query<{ value: Buffer | Uint8Array }>(`SELECT value FROM server_secret WHERE name = 'cursor'`)
    .then((rows) => {
      if (!rows.length) throw new Error('server_secret has no cursor key (schema migration 11)');
      return crypto.createHash('sha256').update(Buffer.from(rows[0].value)).digest();
    })
    .catch((e: unknown) => {
      key = undefined;
      throw e;
    });
  return key;
}

export async function sealCursor(q: Queryable, raw: string): Promise<string> {
  const iv = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-256-gcm', await cursorKey(q), iv);
  const body = Buffer.concat([c.update(raw, 'utf8'), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), body]).toString('base64url');
}

export async function openCursor(q: Queryable, sealed: string, param = '_cursor'): Promise<string> {
  try {
    const all = Buffer.from(sealed, 'base64url');
    const d = crypto.createDecipheriv('aes-256-gcm', await cursorKey(q), all.subarray(0, 12));
    d.setAuthTag(all.subarray(12, 28));
    return Buffer.concat([d.update(all.subarray(28)), d.final()]).toString('utf8');
  } catch {
    throw new OutcomeError('invalid', 'the paging cursor is not valid (follow the next link as given)', param);
  }
}
