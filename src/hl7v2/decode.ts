/**
 * Bytes → text for HL7 v2, and text → bytes for the ACK.
 *
 * - The character set comes from MSH-18 (HL7 table 0211), read from the raw bytes: MSH itself is ASCII and MSH-1
 *   (the field separator) is the 4th byte. Empty MSH-18 → the configured default (`HL7_DEFAULT_CHARSET`; Baltic
 *   senders often send windows-1257 without saying so). An MSH-18 we do not know → `unsupported` at MSH-18.
 * - Declared UTF-8 is decoded strictly: a Latin-1 or Baltic message mislabelled UTF-8 is refused (`invalid` at
 *   MSH-18) instead of turning õ ä ö ü into U+FFFD. Declared ASCII with 8-bit bytes is decoded as ISO 8859-1 and
 *   flagged with a warning.
 * - A leading UTF-8 byte order mark is dropped; CR, LF and CRLF all end a segment (normalised to CR).
 *
 * @see HL7 v2.5.1 ch. 2, §2.5 (segment terminator), §2.15.9.18 (MSH-18 character set), table 0211 (alternate
 *   character sets)
 */
import iconv from 'iconv-lite';
import { issue, OutcomeError } from '../fhir/outcome.js';
import type { OperationOutcomeIssue } from '../fhir/types.js';

/**
 * MSH-18 values → iconv-lite encoding names. The HL7 table 0211 values we can decode byte-wise, plus lenient
 * spellings seen from Baltic senders (`WINDOWS-1257`, `CP1257`, `8859/13` are not in table 0211).
 * UTF-16/32 and the ISO 2022 Japanese sets are left out: with them MSH is no longer ASCII bytes.
 */
const TABLE_0211: Record<string, string> = {
  ASCII: 'ascii',
  'ISO IR6': 'ascii',
  'UNICODE UTF-8': 'utf-8',
  UNICODE: 'utf-8',
  'UTF-8': 'utf-8',
  UTF8: 'utf-8',
  '8859/1': 'latin1',
  'ISO IR100': 'latin1',
  '8859/2': 'iso-8859-2',
  '8859/3': 'iso-8859-3',
  '8859/4': 'iso-8859-4',
  '8859/5': 'iso-8859-5',
  '8859/6': 'iso-8859-6',
  '8859/7': 'iso-8859-7',
  '8859/8': 'iso-8859-8',
  '8859/9': 'iso-8859-9',
  '8859/13': 'iso-8859-13',
  '8859/15': 'iso-8859-15',
  'WINDOWS-1257': 'windows-1257',
  CP1257: 'windows-1257',
  'WINDOWS-1252': 'windows-1252',
  CP1252: 'windows-1252',
  'BIG-5': 'big5',
  'GB 18030-2000': 'gb18030',
  'KS X 1001': 'euc-kr',
};

/**
 * The iconv-lite name for an MSH-18 value (table 0211 or a lenient alias), or undefined when unknown.
 * With `allowIconvNames` (used for the configured default) any name iconv-lite knows is accepted too.
 */
export function charsetFor(name: string, allowIconvNames = false): string | undefined {
  const key = name.trim().toUpperCase();
  const known = TABLE_0211[key];
  if (known) return known;
  if (allowIconvNames && iconv.encodingExists(key)) return key.toLowerCase();
  return undefined;
}

function withoutBom(bytes: Buffer): Buffer {
  return bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? bytes.subarray(3) : bytes;
}

/**
 * The first line (the MSH segment when the message is well formed) of a raw message as text, without decoding
 * the rest: bytes are mapped one to one (latin1), which is exact for the ASCII MSH fields an ACK needs.
 */
export function rawMsh(bytes: Buffer): string {
  const body = withoutBom(bytes);
  let start = 0;
  while (start < body.length && (body[start] === 0x0d || body[start] === 0x0a)) start++; // blank lines before MSH
  let end = start;
  while (end < body.length && body[end] !== 0x0d && body[end] !== 0x0a) end++;
  return body.subarray(start, end).toString('latin1');
}

/** MSH-18 as written in the raw bytes ('' when absent or when there is no MSH); only the first repetition counts. */
export function declaredCharset(bytes: Buffer): string {
  const msh = rawMsh(bytes);
  if (!msh.startsWith('MSH') || msh.length < 8) return '';
  const fs = msh[3];
  const rep = msh[5] ?? '~';
  return (msh.split(fs)[17] ?? '').split(rep)[0].trim();
}

export interface Decoded {
  /** the message text, segments separated by CR (see normaliseSegments) */
  text: string;
  /** the iconv-lite name actually used; pass it to `encode` for the ACK */
  charset: string;
  /** the MSH-18 value as written, or '' */
  declared: string;
  /** non-fatal findings (e.g. 8-bit bytes in a message declared ASCII), for ERR segments with severity W */
  warnings: OperationOutcomeIssue[];
}

/**
 * Decodes a received message.
 * @param bytes the payload as received (MLLP frame content or HTTP body)
 * @param defaultCharset used when MSH-18 is empty (config.hl7DefaultCharset); an iconv-lite name or an MSH-18 value
 * @throws OutcomeError `unsupported` at MSH-18 for an unknown charset; `invalid` at MSH-18 when the bytes are not
 *   valid UTF-8 although UTF-8 applies
 */
export function decodeHl7(bytes: Buffer, defaultCharset = 'utf-8', senderCharset?: (facility: string) => string | undefined): Decoded {
  const body = withoutBom(bytes);
  const declared = declaredCharset(body);
  // MSH-18 empty: the sending facility's own default (mappings/facilities.yaml `charset`), else the configured one
  const facility = declared ? '' : (rawMsh(body).split('|')[3] ?? '').split('^')[0];
  const fallback = (facility && senderCharset?.(facility)) || defaultCharset;
  let charset = declared ? charsetFor(declared) : charsetFor(fallback, true);
  const early: OperationOutcomeIssue[] = [];
  if (!charset && declared && body.every((b) => b < 0x80)) {
    // an MSH-18 value no table knows, on a message that is pure ASCII: every character set reads it the same
    charset = 'utf-8';
    early.push(issue({ severity: 'warning', text: `character set "${declared}" in MSH-18 is not one HL7 table 0211 knows; the message is pure ASCII, so it was read as such`, where: 'MSH-18' }));
  }
  if (!charset) {
    throw declared
      ? new OutcomeError('unsupported', `character set "${declared}" in MSH-18 is not supported (HL7 table 0211)`, 'MSH-18')
      : new OutcomeError('unsupported', `the configured default character set "${defaultCharset}" is not supported`, 'MSH-18');
  }
  const warnings: OperationOutcomeIssue[] = [...early];
  let text: string;
  if (charset === 'utf-8') {
    try {
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body);
    } catch {
      throw new OutcomeError(
        'invalid',
        declared
          ? `MSH-18 declares "${declared}" but the bytes are not valid UTF-8 (a Latin or Baltic character set?); declare the right charset in MSH-18`
          : `MSH-18 is empty and the bytes are not valid UTF-8 (the default character set); declare the charset in MSH-18`,
        'MSH-18',
      );
    }
  } else if (charset === 'ascii') {
    const first = body.findIndex((b) => b > 0x7f);
    if (first >= 0) {
      const count = body.reduce((n, b) => n + (b > 0x7f ? 1 : 0), 0);
      warnings.push(
        issue({
          severity: 'warning',
          text: `MSH-18 declares ASCII but the message has ${count} non-ASCII byte(s) (the first at offset ${first}); read as ISO 8859-1`,
          where: 'MSH-18',
        }),
      );
    }
    text = body.toString('latin1');
  } else {
    text = iconv.decode(body, charset);
  }
  return { text: normaliseSegments(text), charset, declared, warnings };
}

/**
 * Segment separators CRLF, LF and CR all become CR; blank and whitespace-only lines (including trailing ones) are
 * dropped, as is a leading U+FEFF. The result has no trailing CR.
 */
export function normaliseSegments(text: string): string {
  // fast path: already CR-separated, nothing blank, no BOM
  if (!/[\n\uFEFF]|\r\s*\r|\r\s*$/.test(text) && text.trim() === text) return text;
  return text
    .replace(/^\uFEFF/, '')
    .split(/\r\n|\n|\r/)
    .filter((line) => line.trim() !== '')
    .join('\r');
}

/**
 * Encodes outgoing text (an ACK) in the character set of the message it answers.
 * @param charset an iconv-lite name as returned in `Decoded.charset` (or an MSH-18 value)
 */
export function encode(text: string, charset: string): Buffer {
  const name = charsetFor(charset, true) ?? 'utf-8';
  if (name === 'utf-8') return Buffer.from(text, 'utf8');
  if (name === 'ascii' || name === 'latin1') return Buffer.from(text, 'latin1');
  return iconv.encode(text, name);
}

/** Decodes bytes in a known charset (an iconv-lite name or MSH-18 value; unknown → UTF-8), without checks. */
export function decodeAs(bytes: Buffer, charset: string): string {
  const name = charsetFor(charset, true) ?? 'utf-8';
  return name === 'ascii' ? bytes.toString('latin1') : iconv.decode(bytes, name);
}

/** The same as `encode` (the name the rest of the code base uses). */
export const encodeHl7 = encode;
