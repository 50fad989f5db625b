/**
 * Bytes → text (HL7 v2.5.1 §2.15.9.18 MSH-18, table 0211; §2.5 segment terminators) and text → bytes for ACKs.
 * Estonian letters must survive every charset that can carry them.
 */
import fs from 'node:fs';
import path from 'node:path';
import iconv from 'iconv-lite';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { loadConfig } from '../../src/config.js';
import { charsetFor, declaredCharset, decodeHl7, encode, normaliseSegments, rawMsh } from '../../src/hl7v2/decode.js';
import { corpusFiles, describeCorpus, requireCorpusDir } from '../helpers/corpus.js';
import { utf8AcceptOnError } from '../fixtures/hl7v2/messages.js';

const ALL = 'õäöüšžÕÄÖÜŠŽ';
const LATIN1 = 'õäöüÕÄÖÜ';
const msh = (charset: string) => `MSH|^~\\&|HIS|ELVA|GW|TARTU|20261110120000||ADT^A08^ADT_A01|C-1|P|2.5.1||||||${charset}`;
const message = (charset: string, name: string) => `${msh(charset)}\rPID|1||37302102711^^^EE^NI||${name}^Jüri\r`;

describe.each([
  ['UNICODE UTF-8', 'utf-8', ALL],
  ['UTF-8', 'utf-8', ALL],
  ['8859/15', 'iso-8859-15', ALL],
  ['8859/4', 'iso-8859-4', ALL],
  ['8859/13', 'iso-8859-13', ALL],
  ['WINDOWS-1257', 'windows-1257', ALL],
  ['CP1257', 'windows-1257', ALL],
  ['8859/1', 'latin1', LATIN1],
])('MSH-18 %s', (declared, iconvName, letters) => {
  const text = message(declared, letters);
  const bytes = iconv.encode(text, iconvName);

  test('decodes with Estonian letters intact', () => {
    const d = decodeHl7(bytes, 'utf-8');
    expect(d.charset).toBe(iconvName);
    expect(d.declared).toBe(declared);
    expect(d.text).toContain(`||${letters}^Jüri`);
    expect(d.warnings).toEqual([]);
  });

  test('encode() for the ACK round-trips the letters in the same charset', () => {
    const d = decodeHl7(bytes);
    expect(encode(d.text, d.charset).equals(iconv.encode(d.text, iconvName))).toBe(true);
    expect(iconv.decode(encode(`ERR|||||||||${letters}`, d.charset), iconvName)).toBe(`ERR|||||||||${letters}`);
  });
});

test('empty MSH-18: the configured default charset applies (windows-1257 from HL7_DEFAULT_CHARSET)', () => {
  const cfg = loadConfig({ HL7_DEFAULT_CHARSET: 'windows-1257' });
  const bytes = iconv.encode(message('', ALL), 'windows-1257');
  expect(declaredCharset(bytes)).toBe('');
  const d = decodeHl7(bytes, cfg.hl7DefaultCharset);
  expect(d.charset).toBe('windows-1257');
  expect(d.text).toContain(ALL);
  // the same bytes read with a UTF-8 default are refused rather than garbled
  expect(() => decodeHl7(bytes, 'utf-8')).toThrow(/not valid UTF-8/);
});

test('Latin-1 bytes labelled UNICODE UTF-8 are refused at MSH-18 (invalid), not silently garbled', () => {
  const bytes = iconv.encode(message('UNICODE UTF-8', LATIN1), 'latin1');
  let err: unknown;
  try {
    decodeHl7(bytes);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(OutcomeError);
  const e = err as OutcomeError;
  expect(e.category).toBe('invalid');
  expect(e.outcome.issue[0].expression).toEqual(['MSH-18']);
  expect(e.message).toMatch(/not valid UTF-8/);
});

test('an unknown MSH-18 is unsupported at MSH-18', () => {
  const err = (() => {
    try {
      decodeHl7(Buffer.from(message('KLINGON', 'Tamm')));
    } catch (e) {
      return e as OutcomeError;
    }
  })();
  expect(err?.category).toBe('unsupported');
  expect(err?.outcome.issue[0].expression).toEqual(['MSH-18']);
  expect(err?.message).toMatch(/KLINGON.*not supported/);
  expect(charsetFor('KLINGON')).toBeUndefined();
  // iconv names are only accepted for the configured default, not in MSH-18
  expect(charsetFor('koi8-r')).toBeUndefined();
  expect(charsetFor('koi8-r', true)).toBe('koi8-r');
});

test('declared ASCII with 8-bit bytes is read as ISO 8859-1 and flagged with a warning', () => {
  const bytes = iconv.encode(message('ASCII', LATIN1), 'latin1');
  const d = decodeHl7(bytes);
  expect(d.text).toContain(LATIN1);
  expect(d.warnings).toHaveLength(1);
  expect(d.warnings[0].severity).toBe('warning');
  expect(d.warnings[0].expression).toEqual(['MSH-18']);
  expect(decodeHl7(Buffer.from(`${msh('ASCII')}\rPID|1||1^^^EE^NI||Tamm^Juri`)).warnings).toEqual([]);
});

test('a UTF-8 BOM is stripped and MSH-18 is read behind it', () => {
  const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(message('UNICODE UTF-8', ALL), 'utf8')]);
  expect(declaredCharset(bytes)).toBe('UNICODE UTF-8');
  expect(rawMsh(bytes).startsWith('MSH|')).toBe(true);
  const d = decodeHl7(bytes);
  expect(d.text.startsWith('MSH|')).toBe(true);
  expect(d.text).toContain(ALL);
});

test('segment separators CRLF, LF and CR become CR; blank and trailing white-space lines are dropped', () => {
  expect(normaliseSegments('MSH|a\r\nPID|1\nPV1|1\rOBX|1')).toBe('MSH|a\rPID|1\rPV1|1\rOBX|1');
  expect(normaliseSegments('MSH|a\r\r\n\nPID|1\r  \r\nPV1|1 \r\n \t\r\n\r\n')).toBe('MSH|a\rPID|1\rPV1|1 ');
  expect(normaliseSegments('\uFEFFMSH|a\rPID|1\r')).toBe('MSH|a\rPID|1');
  expect(normaliseSegments('MSH|a\rPID|1')).toBe('MSH|a\rPID|1');
  expect(decodeHl7(Buffer.from('MSH|^~\\&|A\nPID|1\n\n')).text).toBe('MSH|^~\\&|A\rPID|1');
});

test('a UTF-8 message without MSH-18 keeps its Estonian letters under the default charset', () => {
  const d = decodeHl7(Buffer.from(utf8AcceptOnError(), 'utf8'), 'utf-8');
  expect(d.text).toContain('Põder-Šmidt^Õnne^Žanna');
  expect(d.text).toContain('Jõe 5^^Võru^Võrumaa');
});

describeCorpus('hl7v2', 'corpus', () => {
  const ROOT = requireCorpusDir('hl7v2');
  const files = corpusFiles('hl7v2', '.hl7');

  test('the corpus is there', () => expect(files.length).toBeGreaterThan(20));

  test.each(files)('%s decodes to CR-separated segments starting with MSH', (file) => {
    const bytes = fs.readFileSync(path.join(ROOT, file));
    const d = decodeHl7(bytes, 'utf-8');
    expect(d.text.startsWith('MSH')).toBe(true);
    expect(d.text).not.toMatch(/\n/);
    const lines = bytes.toString('latin1').split(/\r\n|\n|\r/).filter((l) => l.trim() !== '');
    expect(d.text.split('\r')).toHaveLength(lines.length);
  });

  test('the UTF-8 sample keeps its umlauts', () => {
    const d = decodeHl7(fs.readFileSync(path.join(ROOT, 'ipf/msg-01-utf8.hl7')), 'utf-8');
    expect(d.text).toContain('Nächname^Vörname');
    expect(d.text).toContain('Blöhplatz');
  });
});

test('an MSH-18 value no table knows: read with a warning when the message is pure ASCII, refused when it is not', () => {
  const ascii = 'MSH|^~\\&|A|B|C|D|20261110120000||ADT^A08^ADT_A01|U-1|P|2.5.1||||||X-UNKNOWN-SET\rPID|1||37302102711^^^EE^NI||Tamm^Juri';
  const d = decodeHl7(Buffer.from(ascii, 'latin1'));
  expect(d.text).toContain('Tamm^Juri');
  expect(d.warnings.map((w) => w.diagnostics).join(' ')).toMatch(/X-UNKNOWN-SET.*pure ASCII/);
  expect(() => decodeHl7(Buffer.from(ascii.replace('Juri', 'J\u00fcri'), 'latin1'))).toThrow(/X-UNKNOWN-SET.*not supported/);
});

test('a facility that leaves MSH-18 empty is read in its own character set (mappings/facilities.yaml charset)', async () => {
  const { facilityCharset } = await import('../../src/mapping/hl7v2/load.js');
  const text = 'MSH|^~\\&|HIS|ELVA_VANA_HIS|C|D|20261110120000||ADT^A08^ADT_A01|V-1|P|2.5.1\rPID|1||37302102711^^^EE^NI||Tamm^Jüri Õie';
  const bytes = iconv.encode(text, 'windows-1257');
  expect(decodeHl7(bytes, 'utf-8', facilityCharset).text).toContain('Jüri Õie');
  // without the facility's own default the configured one applies (UTF-8 here: refused, not garbled)
  expect(() => decodeHl7(bytes, 'utf-8')).toThrow(/not valid UTF-8/);
});
