/**
 * parseHl7, with both engines (plain split and the npm hl7v2 wrapper): HL7 v2.5.1 §2.5 segment terminators,
 * §2.6 delimiters from MSH-1/MSH-2, §2.7 escape sequences, table 0354 structures; structure errors name MSH.
 */
import { loadHl7v2Engine, parseHl7, type ParseEngine } from '../../src/hl7v2/parse.js';
import { value, repetitions } from '../../src/hl7v2/message.js';
import { OutcomeError } from '../../src/fhir/outcome.js';

const MSH = 'MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|GW|TARTU|20261110143512||ADT^A03^ADT_A03|C1|P|2.5.1';
const PID = 'PID|1||38001010015^^^EE^NI~H-1^^^ELVA_HAIGLA^MR||Põldsaar^Jüri^Õnne||19800101|M';

beforeAll(() => loadHl7v2Engine());

describe.each<ParseEngine>(['split', 'hl7v2'])('engine %s', (engine) => {
  const parse = (t: string) => parseHl7(t, { engine });

  test.each([
    ['CR', '\r'],
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['CR with a trailing CR and a blank line', '\r\r'],
  ])('segments separated by %s: PID is never lost', (_n, sep) => {
    const msg = parse(`${MSH}${sep}${PID}${sep}`);
    expect(msg.segments.map((s) => s.name)).toEqual(['MSH', 'PID']);
    expect(value(msg.segments[1], 5, 1)).toBe('Põldsaar'); // PID-5.1
  });

  test('a leading BOM is dropped', () => {
    expect(parse(`\uFEFF${MSH}\r${PID}`).messageType).toBe('ADT');
  });

  test('MSH fields are counted as the standard does: MSH-1 is the separator, MSH-2 the encoding characters', () => {
    const msg = parse(`${MSH}\r${PID}`);
    expect(value(msg.segments[0], 1)).toBe('|');
    expect(value(msg.segments[0], 2)).toBe('^~\\&');
    expect(value(msg.segments[0], 7)).toBe('20261110143512'); // seconds kept (the library would drop them)
    expect(msg).toMatchObject({ messageType: 'ADT', triggerEvent: 'A03', structure: 'ADT_A03', controlId: 'C1', version: '2.5.1' });
  });

  test('repetitions, components and subcomponents', () => {
    const msg = parse(`${MSH}\rPID|1||38001010015^^^EE&1.3.6.1.4.1.28284.6.2.2.1&ISO^NI~H-1^^^ELVA_HAIGLA^MR`);
    const pid3 = repetitions(msg.segments[1], 3);
    expect(pid3).toHaveLength(2);
    expect(value(msg.segments[1], 3, 4, 2)).toBe('1.3.6.1.4.1.28284.6.2.2.1'); // PID-3.4.2
    expect(value(msg.segments[1], 3, 1, 1, 2)).toBe('H-1'); // second repetition
  });

  test.each([
    ['\\F\\', '|'],
    ['\\S\\', '^'],
    ['\\T\\', '&'],
    ['\\R\\', '~'],
    ['\\E\\', '\\'],
    ['\\X4B69\\', 'Ki'],
    ['\\XC3B5\\', 'õ'],
    ['rida 1\\.br\\rida 2', 'rida 1\nrida 2'],
    ['Kask\\T\\Mänd', 'Kask&Mänd'],
  ])('escape %s decodes to %j', (raw, decoded) => {
    const msg = parse(`${MSH}\rNTE|1|L|${raw}`);
    expect(value(msg.segments[1], 3)).toBe(decoded);
  });

  test("the message's own delimiters are honoured (MSH-1 # and MSH-2 $*!@)", () => {
    const msg = parse('MSH#$*!@#A#B#C#D#20261110##ADT$A08#1#P#2.5\rPID#1##38001010015$$$EE$NI*X##Tamm!F!Kask@Org$Jüri');
    expect(msg.delimiters).toEqual({ field: '#', component: '$', repetition: '*', escape: '!', subcomponent: '@' });
    expect(value(msg.segments[1], 3, 4)).toBe('EE');
    expect(repetitions(msg.segments[1], 3)).toHaveLength(2);
    expect(value(msg.segments[1], 5, 1)).toBe('Tamm#Kask'); // !F! is the field separator
    expect(value(msg.segments[1], 5, 1, 2)).toBe('Org'); // @ splits subcomponents
    expect(value(msg.segments[1], 5, 2)).toBe('Jüri');
  });

  test('"" (explicit null) is kept as written', () => {
    expect(value(parse(`${MSH}\rPID|1||X||""`).segments[1], 5)).toBe('""');
  });

  test.each([
    ['', 'MSH'],
    ['garbage', 'MSH'],
    ['PID|1||X', 'MSH'],
    ['MSH|', 'MSH-2'],
  ])('%j is refused as a structure error at %s', (text, where) => {
    let err: unknown;
    try {
      parse(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(OutcomeError);
    expect((err as OutcomeError).category).toBe('structure');
    expect((err as OutcomeError).outcome.issue[0].expression).toEqual([where]);
  });
});

test('MSH-9.3 wins over the table', () => {
  expect(parseHl7('MSH|^~\\&|A|B|C|D|20260101||ADT^A04^ADT_A01|1|P|2.5').structure).toBe('ADT_A01');
});
