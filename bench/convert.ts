/**
 * (a) In-process HL7 v2 conversion on one core, for a realistic 25-segment ADT^A03 (~3 KB): decode + parse,
 * map, validate — separately and together — and, for comparison, the npm `hl7v2` parser on the same message.
 * Map and the whole conversion rotate through BENCH_DISTINCT (5000) messages for different people and visits, so
 * what is cached across messages (deterministic ids of the hospital and its doctors) helps only as in real traffic.
 */
import { HL7Message } from 'hl7v2';
import { decodeHl7 } from '../src/hl7v2/decode.js';
import { parseHl7 } from '../src/hl7v2/parse.js';
import { convertHl7 } from '../src/mapping/hl7v2/convert.js';
import { validateResource } from '../src/fhir/validate.js';
import { adtA03 } from './fixtures.js';
import { line, opsPerSecond } from './timing.js';

export function benchConvert(): void {
  const text = adtA03(7);
  const bytes = Buffer.from(text, 'utf8');
  const msg = parseHl7(decodeHl7(bytes).text);
  const conv = convertHl7(msg);
  const resources = [conv.patient, ...conv.resources];
  resources.forEach((r) => validateResource(r)); // compile validators
  console.log(`\n(a) HL7 v2 → FHIR on one core: ADT^A03, ${msg.segments.length} segments, ${bytes.length} bytes → ${resources.length} resources`);
  const parse = opsPerSecond(() => parseHl7(decodeHl7(bytes).text));
  line('decode + parse (ours)', { 'msg/s': parse.ops, 'µs/msg': parse.usPerOp });
  const lib = opsPerSecond(() => HL7Message.parse(text));
  line('parse (npm hl7v2 1.8, for comparison)', { 'msg/s': lib.ops, 'µs/msg': lib.usPerOp });
  const distinct = Number(process.env.BENCH_DISTINCT ?? 5000);
  const many = Array.from({ length: distinct }, (_, i) => Buffer.from(adtA03(1000 + i), 'utf8'));
  const parsed = many.map((b) => parseHl7(decodeHl7(b).text));
  let k = 0;
  const map = opsPerSecond(() => convertHl7(parsed[k++ % distinct]));
  line(`map (mappings/hl7v2, compiled; ${distinct} distinct messages)`, { 'msg/s': map.ops, 'µs/msg': map.usPerOp });
  const val = opsPerSecond(() => resources.forEach((r) => validateResource(r)));
  line(`validate (${resources.length} resources)`, { 'msg/s': val.ops, 'µs/msg': val.usPerOp });
  const all = opsPerSecond(() => {
    const c = convertHl7(parseHl7(decodeHl7(many[k++ % distinct]).text));
    validateResource(c.patient);
    c.resources.forEach((r) => validateResource(r));
  });
  line(`whole conversion (decode+parse+map+validate; ${distinct} distinct)`, { 'msg/s': all.ops, 'µs/msg': all.usPerOp });
}
