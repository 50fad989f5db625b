/**
 * ER7 text → our Hl7Message (message.ts): segments, fields, repetitions, components, subcomponents, every value
 * escape-decoded here with the message's own delimiters (MSH-1, MSH-2).
 *
 * This module is the one place that knows how HL7 v2 text is split, so the splitter can be swapped. Two engines
 * give the same Hl7Message (test/hl7v2/engines.test.ts proves it on the whole corpus):
 * - `split` (the default): a plain split on the delimiters.
 * - `hl7v2`: the npm `hl7v2` parser (panates, pinned 1.8.0), wrapped around its traps: it splits segments on CR
 *   only (we normalise CRLF/LF first), throws on a BOM (stripped first), types date/time values and drops their
 *   seconds (we give it a dictionary without decoders), and unescapes with a hard-coded backslash and no `.br`
 *   (we hide the escape character from it and decode escapes ourselves).
 * `split` is the default because it is several times faster (bench/hl7-parse.ts; figures in docs/benchmarks.md).
 *
 * @see HL7 v2.5.1 §2.5 (message construction), §2.7 (escape sequences), table 0354 (message structure)
 */
import type { HL7Message } from 'hl7v2';
import type { HL7Dictionary } from 'hl7v2-dictionary';
import { OutcomeError } from '../fhir/outcome.js';
import { normaliseSegments } from './decode.js';
import type { Hl7Delimiters, Hl7Field, Hl7Message, Hl7Segment } from './message.js';

/** Decodes HL7 escape sequences (§2.7): \F\ \S\ \T\ \R\ \E\ \Xhh…\ \.br\ ; formatting commands other than .br are dropped. */
export function unescape(v: string, d: Hl7Delimiters): string {
  const e = d.escape;
  if (!e || !v.includes(e)) return v;
  let out = '';
  let i = 0;
  while (i < v.length) {
    const c = v[i];
    if (c !== e) {
      out += c;
      i++;
      continue;
    }
    const close = v.indexOf(e, i + 1);
    if (close < 0) {
      out += v.slice(i); // a lone escape character: kept as written
      break;
    }
    const seq = v.slice(i + 1, close);
    switch (seq[0]) {
      case 'F':
        out += seq.length === 1 ? d.field : '';
        break;
      case 'S':
        out += seq.length === 1 ? d.component : '';
        break;
      case 'T':
        out += seq.length === 1 ? d.subcomponent : '';
        break;
      case 'R':
        out += seq.length === 1 ? d.repetition : '';
        break;
      case 'E':
        out += seq.length === 1 ? d.escape : '';
        break;
      case 'X': {
        const hex = seq.slice(1);
        if (/^([0-9A-Fa-f]{2})+$/.test(hex)) out += Buffer.from(hex, 'hex').toString('utf8');
        break;
      }
      case '.':
        if (seq === '.br') out += '\n'; // other formatting commands (.sp .in .ti .ce .fi .nf) carry no text
        break;
      case 'H':
      case 'N':
        if (seq.length !== 1) out += e + seq + e; // \H\ and \N\ switch highlighting on and off
        break;
      default:
        out += e + seq + e; // not an escape we know: keep the text
    }
    i = close + 1;
  }
  return out;
}

/** Encodes text for an ER7 field value (the inverse of unescape for the five delimiters and newlines). */
export function escape(v: string, d: Hl7Delimiters): string {
  let out = '';
  for (const c of v) {
    if (c === d.escape) out += `${d.escape}E${d.escape}`;
    else if (c === d.field) out += `${d.escape}F${d.escape}`;
    else if (c === d.component) out += `${d.escape}S${d.escape}`;
    else if (c === d.subcomponent) out += `${d.escape}T${d.escape}`;
    else if (c === d.repetition) out += `${d.escape}R${d.escape}`;
    else if (c === '\n') out += `${d.escape}.br${d.escape}`;
    else if (c !== '\r') out += c;
  }
  return out;
}

/** Which splitter parses the text; both fill the same Hl7Message. */
export type ParseEngine = 'split' | 'hl7v2';

export interface ParseOptions {
  /** default `split` (see bench/hl7-parse.ts for why) */
  engine?: ParseEngine;
}

function splitField(raw: string, d: Hl7Delimiters): Hl7Field {
  // most fields hold a single plain value: no split needed
  if (raw.indexOf(d.component) < 0 && raw.indexOf(d.repetition) < 0 && raw.indexOf(d.subcomponent) < 0) return [[[unescape(raw, d)]]];
  return raw.split(d.repetition).map((rep) => rep.split(d.component).map((comp) => comp.split(d.subcomponent).map((sub) => unescape(sub, d))));
}

/** MSH-1 and MSH-2 of normalised text, checked. */
function delimitersOf(text: string): { d: Hl7Delimiters; enc: string } {
  if (!text.startsWith('MSH')) throw new OutcomeError('structure', 'an HL7 v2 message must start with an MSH segment', 'MSH');
  if (text.length < 8) throw new OutcomeError('structure', 'the MSH segment is too short to hold its delimiters', 'MSH-2');
  const fieldSep = text[3];
  let enc = text.slice(4, text.indexOf(fieldSep, 4) < 0 ? 8 : text.indexOf(fieldSep, 4));
  // a doubled escape character (`^~\\&`, from senders that escaped it once too often) is read as one
  if (enc.length === 5 && enc[2] === enc[3]) enc = enc.slice(0, 3) + enc.slice(4);
  if (enc.length < 3) throw new OutcomeError('structure', `MSH-2 must hold the encoding characters (e.g. ^~\\&), got "${enc}"`, 'MSH-2');
  const d: Hl7Delimiters = { field: fieldSep, component: enc[0], repetition: enc[1], escape: enc[2], subcomponent: enc[3] ?? '&' };
  if (new Set([d.field, d.component, d.repetition, d.escape, d.subcomponent]).size !== 5) {
    throw new OutcomeError('structure', 'MSH-1 and MSH-2 must be five different delimiter characters', 'MSH-2');
  }
  return { d, enc };
}

function checkSegmentId(line: string, index: number, d: Hl7Delimiters): string {
  const name = line.slice(0, 3);
  if (!/^[A-Z][A-Z0-9]{2}$/.test(name) || (line.length > 3 && line[3] !== d.field)) {
    throw new OutcomeError('structure', `segment ${index + 1} does not start with a segment id and the field separator`, `segment ${index + 1}`);
  }
  return name;
}

function splitSegments(text: string, d: Hl7Delimiters, enc: string): Hl7Segment[] {
  return text.split('\r').map((line, index) => {
    const name = checkSegmentId(line, index, d);
    const parts = line.split(d.field);
    const fields: Hl7Field[] = [[]];
    if (name === 'MSH') {
      // MSH-1 is the field separator itself, MSH-2 the encoding characters: both taken literally
      fields.push([[[d.field]]], [[[enc]]]);
      for (let i = 2; i < parts.length; i++) fields.push(splitField(parts[i], d));
    } else {
      for (let i = 1; i < parts.length; i++) fields.push(splitField(parts[i], d));
    }
    return { name, index, fields };
  });
}

/* ---- the npm hl7v2 engine ---- */

/** Stands in for the escape character while the library splits (its unescape is hard-wired to backslash). */
const HIDDEN_ESCAPE = '\uE000';
/** Stands in for a literal backslash when the message's escape character is another one. */
const HIDDEN_BACKSLASH = '\uE001';
// the library costs ~70 MB of memory and ~0.7 s to load: it is loaded only for the `hl7v2` engine
let lib: { HL7Message: typeof HL7Message; dictionaries: Record<string, HL7Dictionary> } | undefined;

/** Loads the npm `hl7v2` engine; `parseHl7(…, { engine: 'hl7v2' })` needs this awaited once before. */
export async function loadHl7v2Engine(): Promise<void> {
  if (lib) return;
  const m = await import('hl7v2'); // one after the other: they share modules (and Jest's ESM loader trips otherwise)
  const d = await import('hl7v2-dictionary');
  lib = { HL7Message: m.HL7Message, dictionaries: d.dictionaries as Record<string, HL7Dictionary> };
}

let rawDictionaries: Record<string, HL7Dictionary> | undefined;

/** The library's dictionaries with every decoder removed, so each value stays the text the sender wrote. */
function dictionariesWithoutDecoders(): Record<string, HL7Dictionary> {
  if (rawDictionaries) return rawDictionaries;
  type Def = Record<string, unknown> & { fields?: Record<string, Def> };
  // a type or segment definition, and the definitions of its fields, without decode/encode
  const strip = (def: Def): Def => {
    const { decode: _d, encode: _e, fields, ...rest } = def;
    return fields ? { ...rest, fields: Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, strip(f)])) } : rest;
  };
  const out: Record<string, HL7Dictionary> = {};
  for (const [version, dict] of Object.entries(lib!.dictionaries)) {
    const map = (o: object): Record<string, Def> => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, strip(v as Def)]));
    out[version] = { ...dict, types: map(dict.types), segments: map(dict.segments) } as unknown as HL7Dictionary;
  }
  return (rawDictionaries = out);
}

function libSegments(text: string, d: Hl7Delimiters, enc: string): Hl7Segment[] {
  const lines = text.split('\r');
  lines.forEach((line, i) => checkSegmentId(line, i, d));
  const hidden = d.escape === '\\' ? text.replaceAll('\\', HIDDEN_ESCAPE) : text.replaceAll('\\', HIDDEN_BACKSLASH).replaceAll(d.escape, HIDDEN_ESCAPE);
  if (!lib) throw new Error('the hl7v2 parse engine is not loaded: await loadHl7v2Engine() first');
  let parsed: HL7Message;
  try {
    parsed = lib.HL7Message.parse(hidden, { dictionaries: dictionariesWithoutDecoders() });
  } catch (err) {
    throw new OutcomeError('structure', `the message cannot be parsed: ${(err as Error).message}`, 'MSH');
  }
  // every value back to its raw text, then our own escape decoding
  const raw = (v: unknown): string => (v === null ? '""' : v === undefined ? '' : String(v).replaceAll(HIDDEN_ESCAPE, d.escape).replaceAll(HIDDEN_BACKSLASH, '\\'));
  const leaf = (v: unknown): string[] => raw(v).split(d.subcomponent).map((x) => unescape(x, d));
  return parsed.segments.map((s, index) => {
    const fields: Hl7Field[] = [[]];
    const start = s.segmentType === 'MSH' ? 3 : 1;
    if (s.segmentType === 'MSH') fields.push([[[d.field]]], [[[enc]]]);
    // the library counts fields as the standard does; read up to the last one it holds
    for (let n = start; n <= s.fields.length; n++) {
      const f = s.fields[n - 1];
      const reps = f?.repetitions ?? [];
      fields.push(
        reps.length
          ? reps.map((r) =>
              (r.components ?? []).map((c) => {
                // a component the library holds as one value keeps `&` inside it; otherwise it is already split
                return c.isPrimitive || !c.subComponents ? leaf(c.getValue()) : Array.from(c.subComponents, (x) => unescape(raw(x?.value), d));
              }),
            )
          : [[['']]],
      );
    }
    return { name: s.segmentType, index, fields };
  });
}

/** Parses a decoded message. Throws OutcomeError('structure') when it is not an HL7 v2 message. */
export function parseHl7(input: string, opts: ParseOptions = {}): Hl7Message {
  const text = normaliseSegments(input);
  const { d, enc } = delimitersOf(text);
  const segments = opts.engine === 'hl7v2' ? libSegments(text, d, enc) : splitSegments(text, d, enc);
  const msh = segments[0];
  const get = (f: number, c = 1): string => msh.fields[f]?.[0]?.[c - 1]?.[0] ?? '';
  const messageType = get(9, 1);
  const triggerEvent = get(9, 2);
  if (!messageType) throw new OutcomeError('structure', 'MSH-9 (message type) is empty', 'MSH-9');
  // an empty MSH-9.3 (common in v2.3) stays empty: the mapping knows which structures it routes each trigger in
  const structure = get(9, 3);
  return { delimiters: d, segments, messageType, triggerEvent, structure, controlId: get(10), version: get(12) };
}
