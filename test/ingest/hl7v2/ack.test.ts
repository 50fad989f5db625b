/** ACKs built here (HL7 v2.5.1 §2.9, §2.15.5 ERR, tables 0008, 0155, 0357). */
import { buildAck, readMsh, ackToSend, errLocation } from '../../../src/ingest/hl7v2/ack.js';
import { OutcomeError } from '../../../src/fhir/outcome.js';
import { parseHl7 } from '../../../src/ingest/hl7v2/parse.js';
import { value } from '../../../src/ingest/hl7v2/message.js';

const MSG = 'MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|CARE_GW|TARTUMAA|20261110120000||ADT^A03^ADT_A03|CTRL-9|P|2.5.1|||AL|ER||8859/15\rPID|1';

test('the ACK swaps sender and receiver, answers MSA-2 with the original control id and echoes the version', () => {
  const ack = parseHl7(buildAck(MSG, { code: 'AA' }));
  const [msh, msa] = ack.segments;
  expect(value(msh, 3)).toBe('CARE_GW'); // MSH-3 ← original MSH-5
  expect(value(msh, 4)).toBe('TARTUMAA'); // MSH-4 ← original MSH-6
  expect(value(msh, 5)).toBe('ELVA_HIS'); // MSH-5 ← original MSH-3
  expect(value(msh, 6)).toBe('ELVA_HAIGLA'); // MSH-6 ← original MSH-4
  expect(ack.messageType).toBe('ACK');
  expect(ack.triggerEvent).toBe('A03');
  expect(ack.controlId).not.toBe('CTRL-9'); // a new MSH-10
  expect(ack.version).toBe('2.5.1');
  expect(value(msh, 18)).toBe('8859/15');
  expect(msa.name).toBe('MSA');
  expect(value(msa, 1)).toBe('AA');
  expect(value(msa, 2)).toBe('CTRL-9');
});

test('AE carries ERR with location, table 0357 code, severity and the escaped text', () => {
  const e = new OutcomeError('invalid', 'isikukood 37302102712 is not valid: the check digit | is 2 but should be 1', 'PID-3.1');
  const ack = parseHl7(buildAck(MSG, { code: 'AE', errors: [e] }));
  const err = ack.segments.find((s) => s.name === 'ERR')!;
  expect(value(err, 2, 1)).toBe('PID');
  expect(value(err, 2, 2)).toBe('1');
  expect(value(err, 2, 3)).toBe('3');
  expect(value(err, 2, 4)).toBe('1');
  expect(value(err, 3, 1)).toBe('207');
  expect(value(err, 3, 3)).toBe('HL70357');
  expect(value(err, 4)).toBe('E');
  expect(value(err, 8)).toBe(e.message); // the | survives escaping
  expect(value(ack.segments[1], 1)).toBe('AE');
});

test('an AR can be built from a message with only part of an MSH', () => {
  const ack = buildAck('MSH|^~\\&|X', { code: 'AR', errors: [new OutcomeError('structure', 'no message type', 'MSH-9')] });
  expect(ack).toMatch(/^MSH\|\^~\\&\|/);
  expect(ack).toContain('\rMSA|AR|');
  expect(buildAck('garbage', { code: 'AR' })).toContain('\rMSA|AR||');
});

test('MSH-15/16 decide which ACK is sent (original mode: always the application ack)', () => {
  const m = (acc: string, app: string) => readMsh(`MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5|||${acc}|${app}`);
  expect(ackToSend(m('', ''), 'AA')).toBe('AA');
  expect(ackToSend(m('', ''), 'AE')).toBe('AE');
  expect(ackToSend(m('AL', 'NE'), 'AA')).toBe('CA'); // accept ack only, sent once stored
  expect(ackToSend(m('AL', 'NE'), 'AE')).toBe('CE');
  expect(ackToSend(m('AL', 'AL'), 'AE')).toBe('AE');
  expect(ackToSend(m('NE', 'ER'), 'AA')).toBeNull();
  expect(ackToSend(m('NE', 'ER'), 'AR')).toBe('AR');
  expect(ackToSend(m('NE', 'SU'), 'AA')).toBe('AA');
  expect(ackToSend(m('NE', 'NE'), 'AA')).toBeNull();
});

test('error locations follow the ERL datatype', () => {
  const d = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };
  expect(errLocation('PID-3.1', d)).toBe('PID^1^3^1');
  expect(errLocation('MSH-18', d)).toBe('MSH^1^18');
  expect(errLocation('Patient.birthDate', d)).toBe('');
});
