/**
 * ACKs built from the raw MSH (HL7 v2.5.1 ch. 2: §2.9 acknowledgment modes, §2.15.5 ERR, §2.15.8 MSA;
 * tables 0008, 0155, 0357; ERL for ERR-2; §2.7 escapes).
 */
import fs from 'node:fs';
import path from 'node:path';
import { OutcomeError, issue } from '../../src/fhir/outcome.js';
import { ackMode, ackToSend, buildAck, errLocation, escapeHl7, readMsh, shouldSendAck } from '../../src/hl7v2/ack.js';
import { decodeHl7 } from '../../src/hl7v2/decode.js';
import { corpusFiles, describeCorpus, requireCorpusDir } from '../helpers/corpus.js';
import { utf8AcceptOnError } from '../fixtures/hl7v2/messages.js';

const MSG =
  'MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|CARE_GW|TARTUMAA|20261110120000||ADT^A03^ADT_A03|CTRL-9|P|2.5.1|||AL|ER||8859/15\rPID|1||37302102711^^^EE^NI||Tamm^Jüri';

/** Segments of an ACK, each split into fields so that `f[n]` is field n (for MSH too: MSH-1 is the separator). */
function segments(ack: string, fs = '|'): Record<string, string[][]> {
  const out: Record<string, string[][]> = {};
  for (const line of ack.split('\r').filter(Boolean)) {
    const parts = line.split(fs);
    const fields = parts[0] === 'MSH' ? ['MSH', fs, ...parts.slice(1)] : parts;
    (out[parts[0]] ??= []).push(fields);
  }
  return out;
}

/** Undoes §2.7 escapes for the default delimiters (test-side check of the escaping). */
const unescape = (v: string) =>
  v.replace(/\\([FSTRE]|\.br)\\/g, (_, c: string) => ({ F: '|', S: '^', T: '&', R: '~', E: '\\', '.br': '\n' })[c] ?? '');

test('MSH of the ACK: sender and receiver swapped, new control id, trigger, processing id, version and charset echoed', () => {
  const ack = buildAck(MSG, { code: 'AA' });
  expect(ack.endsWith('\r')).toBe(true);
  const { MSH: [msh], MSA: [msa] } = segments(ack);
  expect(msh[2]).toBe('^~\\&');
  expect(msh[3]).toBe('CARE_GW'); // ← MSH-5
  expect(msh[4]).toBe('TARTUMAA'); // ← MSH-6
  expect(msh[5]).toBe('ELVA_HIS'); // ← MSH-3
  expect(msh[6]).toBe('ELVA_HAIGLA'); // ← MSH-4
  expect(msh[7]).toMatch(/^\d{14}[+-]\d{4}$/);
  expect(msh[9]).toBe('ACK^A03^ACK');
  expect(msh[10]).not.toBe('CTRL-9');
  expect(msh[10].length).toBeLessThanOrEqual(20);
  expect(msh[11]).toBe('P');
  expect(msh[12]).toBe('2.5.1');
  expect(msh[15] ?? '').toBe(''); // an ACK asks for no ACK
  expect(msh[16] ?? '').toBe('');
  expect(msh[18]).toBe('8859/15');
  expect(msa.slice(0, 3)).toEqual(['MSA', 'AA', 'CTRL-9']);
  expect(segments(ack).ERR).toBeUndefined();
});

test('every ACK has its own control id', () => {
  const ids = new Set(Array.from({ length: 200 }, () => segments(buildAck(MSG, { code: 'AA' })).MSH[0][10]));
  expect(ids.size).toBe(200);
});

test('the message’s own delimiters are reused, and MSA-2 is copied as written (not escaped twice)', () => {
  const msg = 'MSH#$~\\&#APP#FAC#GW#GWF#20260101##ORU$R01$ORU_R01#ID\\T\\7#T#2.4\rPID#1';
  const ack = buildAck(msg, { code: 'AE', errors: [new OutcomeError('invalid', 'bad | value $ here #', 'PID-5.2')] });
  const s = segments(ack, '#');
  expect(s.MSH[0][2]).toBe('$~\\&');
  expect(s.MSH[0][9]).toBe('ACK$R01$ACK');
  expect(s.MSH[0][11]).toBe('T');
  expect(s.MSH[0][12]).toBe('2.4');
  expect(s.MSA[0][2]).toBe('ID\\T\\7');
  expect(s.ERR[0][2]).toBe('PID$1$5$1$2');
  expect(s.ERR[0][8]).toBe('bad | value \\S\\ here \\F\\');
});

test('AE: one ERR per issue with ERL location, table 0357 code, severity and text', () => {
  const e = new OutcomeError('invalid', 'isikukood 37302102712 is not valid: the check digit is 2 but should be 1', 'PID-3.1');
  const ack = buildAck(MSG, { code: 'AE', errors: [e] });
  const { MSA: [msa], ERR: [err] } = segments(ack);
  expect(msa[1]).toBe('AE');
  expect(msa[2]).toBe('CTRL-9');
  expect(msa[3]).toBe(e.message);
  expect(err[2]).toBe('PID^1^3^1^1'); // segment ^ sequence ^ field ^ repetition ^ component
  expect(err[3]).toBe('207^Application internal error^HL70357');
  expect(err[4]).toBe('E');
  expect(err[8]).toBe(e.message);
});

test('ERR-3 follows CATEGORIES: conflict → 205, structure → 100, unsupported → 200; warnings W, information I', () => {
  const errors = [
    new OutcomeError('conflict', 'control id reused', 'MSH-10'),
    new OutcomeError('structure', 'no PID', 'PID'),
    new OutcomeError('unsupported', 'ZZZ^Z01 is not supported', 'MSH-9'),
  ];
  const issues = [issue({ severity: 'warning', text: 'ZBE ignored', where: 'ZBE-1' }), issue({ severity: 'information', text: 'note' })];
  const { ERR } = segments(buildAck(MSG, { code: 'AR', errors, issues }));
  expect(ERR.map((e) => [e[2], e[3], e[4]])).toEqual([
    ['MSH^1^10', '205^Duplicate key identifier^HL70357', 'E'],
    ['', '100^Segment sequence error^HL70357', 'E'],
    ['MSH^1^9', '200^Unsupported message type^HL70357', 'E'],
    ['ZBE^1^1', '207^Application internal error^HL70357', 'W'],
    ['', '0^Message accepted^HL70357', 'I'],
  ]);
});

test('HL7 delimiters in error text are escaped (\\F\\ \\S\\ \\R\\ \\E\\ \\T\\) and survive a round trip', () => {
  const text = 'value "a|b^c~d\\e&f" is wrong\nsee PID-5';
  const ack = buildAck(MSG, { code: 'AE', errors: [new OutcomeError('invalid', text, 'PID-5')] });
  const { ERR: [err], MSA: [msa] } = segments(ack);
  expect(err[8]).toBe('value "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f" is wrong\\.br\\see PID-5');
  expect(unescape(err[8])).toBe(text);
  expect(unescape(msa[3])).toBe(text.replace(/\s+/g, ' ')); // MSA-3 is one line
  expect(ack.split('\r').filter(Boolean)).toHaveLength(3); // MSH, MSA, ERR: nothing broke out of its field
  expect(escapeHl7('a|b', { field: '#', component: '$', repetition: '~', escape: '!', subcomponent: '&' })).toBe('a|b');
  expect(escapeHl7('a#b!c', { field: '#', component: '$', repetition: '~', escape: '!', subcomponent: '&' })).toBe('a!F!b!E!c');
});

test('error locations follow the ERL datatype', () => {
  expect(errLocation('PID-3.1')).toBe('PID^1^3^1^1');
  expect(errLocation('PID-3')).toBe('PID^1^3');
  expect(errLocation('PID-3.1.2')).toBe('PID^1^3^1^1^2');
  expect(errLocation('PID-3[2].4')).toBe('PID^1^3^2^4');
  expect(errLocation('OBX[3]-5')).toBe('OBX^3^5');
  expect(errLocation('MSH-18')).toBe('MSH^1^18');
  expect(errLocation('Patient.birthDate')).toBe('');
  expect(errLocation(undefined)).toBe('');
});

test('an ACK from a message with only part of an MSH', () => {
  const partial = buildAck('MSH|^~\\&|LAB|SYNLAB|||20260101||ORU^R01|P-77', { code: 'AR', errors: [new OutcomeError('structure', 'MSH-11/12 missing', 'MSH-12')] });
  const s = segments(partial);
  expect(s.MSH[0][3]).toBe('CARE-GATEWAY'); // nobody named as receiver: our own name
  expect(s.MSH[0][5]).toBe('LAB');
  expect(s.MSH[0][6]).toBe('SYNLAB');
  expect(s.MSH[0][9]).toBe('ACK^R01^ACK');
  expect(s.MSH[0][11]).toBe('P');
  expect(s.MSH[0][12]).toBe('2.5.1');
  expect(s.MSA[0].slice(0, 3)).toEqual(['MSA', 'AR', 'P-77']);
  expect(s.ERR[0][2]).toBe('MSH^1^12');

  const stub = segments(buildAck('MSH|^~\\&|X', { code: 'AR' }));
  expect(stub.MSH[0][5]).toBe('X');
  expect(stub.MSA[0].slice(0, 3)).toEqual(['MSA', 'AR', '']);
  expect(segments(buildAck('MSH|', { code: 'AR' })).MSH[0][2]).toBe('^~\\&');
});

test('no MSH at all: default delimiters, empty MSA-2, and AR whatever was asked', () => {
  for (const raw of ['garbage', '', 'PID|1||123', 'MSHx^~\\&x']) {
    const ack = buildAck(raw, { code: 'AA', errors: [new OutcomeError('structure', 'no MSH', 'MSH')] });
    expect(ack.startsWith('MSH|^~\\&|CARE-GATEWAY|')).toBe(true);
    expect(segments(ack).MSA[0].slice(0, 3)).toEqual(['MSA', 'AR', '']);
  }
  expect(readMsh('garbage')).toBeUndefined();
});

test('readMsh returns the raw MSH fields without a parser', () => {
  expect(readMsh(MSG)).toMatchObject({
    sendingApp: 'ELVA_HIS',
    sendingFacility: 'ELVA_HAIGLA',
    receivingApp: 'CARE_GW',
    receivingFacility: 'TARTUMAA',
    messageType: 'ADT^A03^ADT_A03',
    triggerEvent: 'A03',
    controlId: 'CTRL-9',
    processingId: 'P',
    version: '2.5.1',
    acceptAckType: 'AL',
    appAckType: 'ER',
    charset: '8859/15',
  });
});

describe('MSH-15 / MSH-16 (table 0155)', () => {
  const m = (acc: string, app: string) => `MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5|||${acc}|${app}`;

  test('shouldSendAck: AL always, NE never, ER on error, SU on success, empty always', () => {
    const table = (['AL', 'NE', 'ER', 'SU', ''] as const).map((mode) => [mode, ...(['AA', 'AE', 'AR', 'CA', 'CE', 'CR'] as const).map((c) => shouldSendAck(mode, c))]);
    expect(table).toEqual([
      ['AL', true, true, true, true, true, true],
      ['NE', false, false, false, false, false, false],
      ['ER', false, true, true, false, true, true],
      ['SU', true, false, false, true, false, false],
      ['', true, true, true, true, true, true],
    ]);
  });

  test('ackMode reads MSH-15 and MSH-16', () => {
    expect(ackMode(m('al', 'ER'))).toEqual({ accept: 'AL', application: 'ER' });
    expect(ackMode(m('', ''))).toEqual({ accept: '', application: '' });
    expect(ackMode('MSH|^~\\&|A')).toEqual({ accept: '', application: '' });
    expect(ackMode('junk')).toEqual({ accept: '', application: '' });
  });

  test('ackToSend: original mode always; MSH-16 first; else the accept ack per MSH-15', () => {
    const send = (acc: string, app: string, code: 'AA' | 'AE' | 'AR') => ackToSend(readMsh(m(acc, app)), code);
    expect(send('', '', 'AA')).toBe('AA');
    expect(send('', '', 'AR')).toBe('AR');
    expect(send('', 'AL', 'AE')).toBe('AE');
    expect(send('AL', 'AL', 'AA')).toBe('AA');
    expect(send('NE', 'ER', 'AA')).toBeNull();
    expect(send('NE', 'ER', 'AR')).toBe('AR');
    expect(send('NE', 'SU', 'AA')).toBe('AA');
    expect(send('NE', 'SU', 'AE')).toBeNull();
    expect(send('NE', 'NE', 'AA')).toBeNull();
    expect(send('AL', 'NE', 'AA')).toBe('CA'); // the sender waits for its accept ack
    expect(send('AL', 'NE', 'AE')).toBe('CE');
    expect(send('AL', '', 'AR')).toBe('CR');
    expect(send('ER', '', 'AA')).toBeNull();
    expect(ackToSend(undefined, 'AR')).toBe('AR');
  });

  test('a UTF-8 message asking MSH-15 = ER (MSH-16 empty) — no ACK on success, CE on error', () => {
    const text = decodeHl7(Buffer.from(utf8AcceptOnError(), 'utf8')).text;
    expect(ackMode(text)).toEqual({ accept: 'ER', application: '' });
    expect(ackToSend(readMsh(text), 'AA')).toBeNull();
    expect(ackToSend(readMsh(text), 'AE')).toBe('CE');
  });
});

describeCorpus('hl7v2', 'corpus', () => {
  const ROOT = requireCorpusDir('hl7v2');

  test.each(corpusFiles('hl7v2', '.hl7'))('%s: the ACK answers its MSH-10 and echoes its version', (file) => {
    const text = decodeHl7(fs.readFileSync(path.join(ROOT, file))).text;
    const fields = text.split('\r')[0].split('|');
    const s = segments(buildAck(text, { code: 'AA' }));
    expect(s.MSA[0][2]).toBe(fields[9]);
    expect(s.MSH[0][12]).toBe(fields[11]);
    expect(s.MSH[0][5]).toBe(fields[2]);
    expect(s.MSH[0][9]).toBe(`ACK^${fields[8].split('^')[1] ?? ''}^ACK`);
  });
});
