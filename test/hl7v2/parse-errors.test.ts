/**
 * Decoding and parsing HL7 v2 (HL7 v2.5.1 ch. 2: segment terminators, delimiters, escape sequences, MSH-18).
 * The traps found in the npm `hl7v2` parser are each pinned here: LF-only messages, a BOM, MSH-18 spellings.
 */
import iconv from 'iconv-lite';
import { decodeHl7, declaredCharset } from '../../src/hl7v2/decode.js';
import { parseHl7, unescape, escape } from '../../src/hl7v2/parse.js';
import { value, repetitions, segmentsNamed } from '../../src/hl7v2/message.js';
import { OutcomeError } from '../../src/fhir/outcome.js';

const MSH = (charset = '') => `MSH|^~\\&|APP|FAC|GW|TARTU|20261110120000||ADT^A03^ADT_A03|C1|P|2.5.1||||||${charset}`; // charset in MSH-18
const PID = 'PID|1||37302102711^^^EE^NI~H-1^^^ELVA^MR||Õunapuu^Tõnu^Šimo||19730210|M';

test.each([
  ['CR', '\r'],
  ['LF', '\n'],
  ['CRLF', '\r\n'],
])('segments separated by %s all parse (PID is never lost)', (_n, sep) => {
  const msg = parseHl7(decodeHl7(Buffer.from(`${MSH()}${sep}${PID}${sep}`)).text);
  expect(msg.segments.map((s) => s.name)).toEqual(['MSH', 'PID']);
  expect(value(msg.segments[1], 5, 1)).toBe('Õunapuu');
});

test('a leading UTF-8 BOM is dropped', () => {
  const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`${MSH()}\r${PID}`)]);
  expect(parseHl7(decodeHl7(bytes).text).messageType).toBe('ADT');
});

test.each([
  ['UNICODE UTF-8', 'utf8'],
  ['8859/15', 'iso-8859-15'],
  ['8859/13', 'iso-8859-13'],
  ['WINDOWS-1257', 'windows-1257'],
])('MSH-18 %s: Estonian letters õäöüšž survive', (charset, enc) => {
  const text = `${MSH(charset)}\rPID|1||37302102711^^^EE^NI||Õunapuu-Šäär^Tõnu Žüri||19730210|M`;
  const bytes = enc === 'utf8' ? Buffer.from(text, 'utf8') : iconv.encode(text, enc);
  const msg = parseHl7(decodeHl7(bytes).text);
  expect(value(msg.segments[1], 5, 1)).toBe('Õunapuu-Šäär');
  expect(value(msg.segments[1], 5, 2)).toBe('Tõnu Žüri');
});

test('8859/1 (Latin-1) carries õäöü', () => {
  const bytes = iconv.encode(`${MSH('8859/1')}\rPID|1||X||Põld^Jüri`, 'latin1');
  expect(value(parseHl7(decodeHl7(bytes).text).segments[1], 5, 1)).toBe('Põld');
});

test('an empty MSH-18 uses the configured default charset (Baltic senders: windows-1257)', () => {
  const bytes = iconv.encode(`${MSH()}\rPID|1||X||Šmidt^Žanna`, 'windows-1257');
  expect(declaredCharset(bytes)).toBe('');
  expect(value(parseHl7(decodeHl7(bytes, 'windows-1257').text).segments[1], 5, 1)).toBe('Šmidt');
});

test('bytes that do not match the declared UTF-8 are refused at MSH-18, not garbled', () => {
  const bytes = iconv.encode(`${MSH('UNICODE UTF-8')}\rPID|1||X||Põld`, 'latin1');
  expect(() => decodeHl7(bytes)).toThrow(OutcomeError);
  try {
    decodeHl7(bytes);
  } catch (e) {
    expect((e as OutcomeError).outcome.issue[0].expression).toEqual(['MSH-18']);
  }
});

test('an unknown MSH-18 is unsupported when the message is not pure ASCII (pure ASCII reads the same in any set)', () => {
  expect(() => decodeHl7(Buffer.from(`${MSH('KLINGON')}\rPID|1||||Tamm^J\u00fcri`, 'latin1'))).toThrow(/not supported/);
  expect(decodeHl7(Buffer.from(`${MSH('KLINGON')}\rPID|1`)).warnings[0].diagnostics).toMatch(/pure ASCII/);
});

test('escape sequences are decoded with the message’s own delimiters', () => {
  const d = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };
  expect(unescape('A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\', d)).toBe('A|B^C&D~E\\');
  expect(unescape('line1\\.br\\line2', d)).toBe('line1\nline2');
  expect(unescape('\\X4F6B\\', d)).toBe('Ok');
  expect(unescape('\\H\\bold\\N\\', d)).toBe('bold');
  expect(escape('a|b^c~d&e\\f\nline', d)).toBe('a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f\\.br\\line');
  const msg = parseHl7(`MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5\rPID|1||X||Kask\\T\\Mänd^Mari`);
  expect(value(msg.segments[1], 5, 1)).toBe('Kask&Mänd');
});

test('repetitions, components and subcomponents are addressed 1-based like the spec', () => {
  const msg = parseHl7(`${MSH()}\r${PID}`);
  const pid = segmentsNamed(msg, 'PID')[0];
  expect(repetitions(pid, 3)).toHaveLength(2);
  expect(value(pid, 3, 1, 1, 2)).toBe('H-1');
  expect(value(pid, 3, 4, 1, 1)).toBe('EE');
  expect(value(msg.segments[0], 1)).toBe('|');
  expect(value(msg.segments[0], 2)).toBe('^~\\&');
  expect(value(msg.segments[0], 9, 3)).toBe('ADT_A03');
});

test('a missing MSH-9.3 stays empty: the mapping finds the structure by the trigger (test/mapping/engine.test.ts)', () => {
  expect(parseHl7(`MSH|^~\\&|A|B|C|D|20260101||ADT^A04|1|P|2.3`).structure).toBe('');
  expect(parseHl7(`MSH|^~\\&|A|B|C|D|20260101||ADT^A04^ADT_A01|1|P|2.3`).structure).toBe('ADT_A01');
});

test.each([
  ['garbage', 'hello world'],
  ['no MSH', 'PID|1||X'],
  ['broken delimiters', 'MSH|^^^^|A'],
  ['no message type', 'MSH|^~\\&|A|B|C|D|20260101|||1|P|2.5'],
])('%s is a structure error', (_n, text) => {
  expect(() => parseHl7(text)).toThrow(OutcomeError);
});
