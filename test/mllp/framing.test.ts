/** MLLP block format (HL7 v2.5.1 Appendix C.4): <VT> payload <FS><CR>, over an arbitrary split of TCP reads. */
import { Deframer, frame } from '../../src/mllp/framing.js';

const p = (s: string) => Buffer.from(s);
const strings = (bufs: Buffer[]) => bufs.map((b) => b.toString());

test('one byte at a time', () => {
  const d = new Deframer(1000);
  const bytes = frame('MSH|^~\\&|A\rPID|1');
  const out: Buffer[] = [];
  for (const b of bytes) out.push(...d.push(Buffer.from([b])));
  expect(strings(out)).toEqual(['MSH|^~\\&|A\rPID|1']);
  expect(d.pending).toBe(0);
});

test('several frames in one read, junk between and around them skipped and counted', () => {
  const d = new Deframer(1000);
  const out = d.push(Buffer.concat([p('junk'), frame('A'), p('\r\n'), frame('B'), frame('C'), p('x')]));
  expect(strings(out)).toEqual(['A', 'B', 'C']);
  expect(d.skipped).toBe(7);
});

test('every possible split point of two frames gives the same two payloads', () => {
  const bytes = Buffer.concat([frame('MSH|1\rPID|ü'), frame('MSH|2')]);
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j++) {
      const d = new Deframer(1000);
      const out = [...d.push(bytes.subarray(0, i)), ...d.push(bytes.subarray(i, j)), ...d.push(bytes.subarray(j))];
      expect(out.map((b) => b.toString('utf8'))).toEqual(['MSH|1\rPID|ü', 'MSH|2']);
    }
  }
});

test('an FS not followed by CR is payload; an FS at a read boundary waits for its CR', () => {
  const d = new Deframer(1000);
  expect(d.push(Buffer.from([0x0b, 0x41, 0x1c, 0x42, 0x1c]))).toEqual([]);
  expect(d.push(Buffer.from([0x0d]))).toEqual([Buffer.from([0x41, 0x1c, 0x42])]);
});

test('a new start byte inside an unfinished frame discards the cut-short frame and resynchronises', () => {
  const d = new Deframer(1000);
  const out = d.push(Buffer.concat([Buffer.from([0x0b]), p('MSH|cut'), frame('MSH|whole')]));
  expect(strings(out)).toEqual(['MSH|whole']);
  expect(d.skipped).toBe('MSH|cut'.length);
});

test('a frame past the limit sets overflow; earlier frames of the same read are still returned', () => {
  const d = new Deframer(10);
  const out = d.push(Buffer.concat([frame('small'), frame('MSH|^~\\&|far too long')]));
  expect(strings(out)).toEqual(['small']);
  expect(d.overflow?.category).toBe('too-large');
  expect(d.head.toString()).toBe('MSH|^~\\&|far too long');
  expect(d.push(frame('ok'))).toEqual([]); // ignored from now on
});

test('the limit applies while a frame is still arriving, and exactly at the limit it passes', () => {
  const d = new Deframer(10);
  d.push(Buffer.concat([Buffer.from([0x0b]), p('x'.repeat(11))]));
  expect(d.pending).toBe(11);
  expect(d.overflow).toBeUndefined(); // 11 bytes could still be 10 + FS
  d.push(p('y'));
  expect(d.overflow).toBeDefined();
  expect(strings(new Deframer(10).push(frame('x'.repeat(10))))).toEqual(['x'.repeat(10)]);
});
