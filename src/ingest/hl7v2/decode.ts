/**
 * Bytes → text for HL7 v2: character set from MSH-18 (HL7 table 0211), or the listener's default for senders
 * that leave it empty; a leading UTF-8 BOM is dropped; segment separators CR, LF and CRLF are all accepted.
 *
 * MSH-18 is read from the raw bytes (MSH itself is ASCII). Declared UTF-8 that is not valid UTF-8 is refused
 * rather than silently garbled (a Latin-1 "õ" would otherwise become U+FFFD).
 *
 * @see HL7 v2.5.1 §2.15.9.18 (MSH-18) and table 0211; §2.5 (segment terminator)
 */
import iconv from 'iconv-lite';
import { OutcomeError } from '../../fhir/outcome.js';

/** HL7 table 0211 values (and common non-standard spellings) → iconv-lite encoding names. */
const CHARSETS: Record<string, string> = {
  ASCII: 'ascii',
  'UNICODE UTF-8': 'utf-8',
  'UTF-8': 'utf-8',
  UTF8: 'utf-8',
  UNICODE: 'utf-8',
  '8859/1': 'latin1',
  '8859/2': 'iso-8859-2',
  '8859/4': 'iso-8859-4',
  '8859/5': 'iso-8859-5',
  '8859/7': 'iso-8859-7',
  '8859/9': 'iso-8859-9',
  '8859/13': 'iso-8859-13',
  '8859/15': 'iso-8859-15',
  'ISO IR6': 'ascii',
  'ISO IR100': 'latin1',
  'WINDOWS-1257': 'windows-1257',
  CP1257: 'windows-1257',
  'WINDOWS-1252': 'windows-1252',
  CP1252: 'windows-1252',
};

/** The iconv name for an HL7 charset name, or undefined when we do not know it. */
export function charsetFor(name: string): string | undefined {
  const key = name.trim().toUpperCase();
  if (CHARSETS[key]) return CHARSETS[key];
  return iconv.encodingExists(key) ? key.toLowerCase() : undefined;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** The raw (ASCII) MSH segment of a message, without decoding the rest. */
export function rawMsh(bytes: Buffer): string {
  const start = bytes.subarray(0, 3).equals(BOM) ? 3 : 0;
  let end = start;
  while (end < bytes.length && bytes[end] !== 0x0d && bytes[end] !== 0x0a) end++;
  return bytes.subarray(start, end).toString('latin1');
}

/** MSH-18 read from the raw bytes ('' when absent); only the first repetition counts. */
export function declaredCharset(bytes: Buffer): string {
  const msh = rawMsh(bytes);
  if (!msh.startsWith('MSH') || msh.length < 8) return '';
  const fs = msh[3];
  const rep = msh[5] ?? '~';
  return (msh.split(fs)[17] ?? '').split(rep)[0].trim();
}

export interface Decoded {
  text: string;
  /** the iconv name actually used */
  charset: string;
  /** the MSH-18 value, or '' */
  declared: string;
}

/** Decodes a received message. Throws OutcomeError at MSH-18 for an unknown charset or undecodable bytes. */
export function decodeHl7(bytes: Buffer, defaultCharset = 'utf-8'): Decoded {
  const body = bytes.subarray(0, 3).equals(BOM) ? bytes.subarray(3) : bytes;
  const declared = declaredCharset(body);
  const charset = declared ? charsetFor(declared) : charsetFor(defaultCharset);
  if (!charset) throw new OutcomeError('unsupported', `character set "${declared || defaultCharset}" is not supported`, 'MSH-18');
  let text: string;
  if (charset === 'utf-8') {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(body);
    } catch {
      throw new OutcomeError(
        'invalid',
        declared
          ? `the message declares ${declared} in MSH-18 but its bytes are not valid UTF-8 (a Latin or Baltic charset?)`
          : `MSH-18 is empty and the bytes are not valid UTF-8 (the default charset); declare the charset in MSH-18`,
        'MSH-18',
      );
    }
  } else if (charset === 'ascii') {
    const bad = body.findIndex((b) => b > 0x7f);
    if (bad >= 0) throw new OutcomeError('invalid', `MSH-18 declares ASCII but byte ${bad} is not ASCII`, 'MSH-18');
    text = body.toString('latin1');
  } else {
    text = iconv.decode(body, charset);
  }
  return { text: normaliseSegments(text), charset, declared };
}

/** CRLF, LF and CR all end a segment; blank lines and trailing white space at the end are dropped. Result: CR-separated. */
export function normaliseSegments(text: string): string {
  // fast path: already CR-separated with no blank segments and no BOM
  if (!text.includes('\n') && !text.includes('\r\r') && !text.endsWith('\r') && text.charCodeAt(0) !== 0xfeff && !/\r\s+\r/.test(text)) return text;
  return text
    .replace(/^\uFEFF/, '')
    .split(/\r\n|\n|\r/)
    .filter((line) => line.trim() !== '')
    .join('\r');
}

/** Encodes an outgoing message (an ACK) in the charset of the message it answers. */
export function encodeHl7(text: string, charset: string): Buffer {
  return charset === 'utf-8' ? Buffer.from(text, 'utf8') : iconv.encode(text, charset);
}
