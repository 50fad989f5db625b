/**
 * Parse cost: our plain split versus the npm `hl7v2` library, on a realistic 25-segment (~3 KB) Estonian ADT^A03
 * (bench/fixtures/adt-a03-25seg.hl7). Prints messages per second for:
 *   split         parseHl7(text)                       plain split + our escape decoding (the default engine)
 *   hl7v2 wrapped parseHl7(text, { engine: 'hl7v2' })  the library, its traps worked around, same Hl7Message
 *   hl7v2 raw     HL7Message.parse(text)               the library alone, typed values (drops seconds)
 * Run: npm run build --silent && node dist/bench/hl7-parse.js
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HL7Message } from 'hl7v2';
import { loadHl7v2Engine, parseHl7 } from '../src/hl7v2/parse.js';
import { line, opsPerSecond } from './timing.js';

/** The fixture sits in bench/fixtures whether this runs from bench/ (ts) or dist/bench/ (compiled). */
function fixture(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++, d = path.dirname(d)) {
    const f = path.join(d, 'bench', 'fixtures', 'adt-a03-25seg.hl7');
    if (fs.existsSync(f)) return fs.readFileSync(f, 'utf8');
  }
  throw new Error('bench/fixtures/adt-a03-25seg.hl7 not found');
}

export async function benchHl7Parse(): Promise<void> {
  await loadHl7v2Engine();
  const text = fixture();
  const kb = (Buffer.byteLength(text) / 1024).toFixed(1);
  const segs = text.split('\r').filter(Boolean).length;
  const split = opsPerSecond(() => parseHl7(text));
  const wrapped = opsPerSecond(() => parseHl7(text, { engine: 'hl7v2' }));
  const raw = opsPerSecond(() => HL7Message.parse(text));
  line(`parse ADT^A03 ${segs} segments ${kb} KB: split`, { 'msgs/s': split.ops, 'µs/msg': split.usPerOp });
  line(`parse ADT^A03 ${segs} segments ${kb} KB: hl7v2 wrapped`, { 'msgs/s': wrapped.ops, 'µs/msg': wrapped.usPerOp, 'x slower': (split.ops / wrapped.ops).toFixed(1) });
  line(`parse ADT^A03 ${segs} segments ${kb} KB: hl7v2 raw`, { 'msgs/s': raw.ops, 'µs/msg': raw.usPerOp, 'x slower': (split.ops / raw.ops).toFixed(1) });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await benchHl7Parse();
