/**
 * ER7 text → our Hl7Message (message.ts): segments, fields, repetitions, components, subcomponents, with
 * escape sequences decoded using the message's own delimiters.
 *
 * This module is the one place that knows how HL7 v2 text is split. The npm `hl7v2` parser was tried here
 * first and replaced (see README, "HL7 v2 parser"): it splits segments on CR only, throws on a BOM, reads
 * MSH-18 literally, types date/time values (dropping seconds) and validates against its dictionary, while
 * every value here must stay the raw text the sender wrote; a plain split is also ~5x faster
 * (bench/hl7-parse.ts measures both).
 *
 * @see HL7 v2.5.1 §2.5 (message construction), §2.7 (escape sequences), table 0354 (message structure)
 */
import { OutcomeError } from '../../fhir/outcome.js';
import { normaliseSegments } from './decode.js';
import type { Hl7Delimiters, Hl7Field, Hl7Message, Hl7Segment } from './message.js';

/** Message structures (table 0354) for trigger events whose MSH-9.3 is empty (common in v2.3/2.3.1). */
const STRUCTURES: Record<string, string> = {
  'ADT^A01': 'ADT_A01', 'ADT^A04': 'ADT_A01', 'ADT^A08': 'ADT_A01', 'ADT^A13': 'ADT_A01',
  'ADT^A02': 'ADT_A02', 'ADT^A03': 'ADT_A03',
  'ADT^A05': 'ADT_A05', 'ADT^A14': 'ADT_A05', 'ADT^A28': 'ADT_A05', 'ADT^A31': 'ADT_A05',
  'ADT^A06': 'ADT_A06', 'ADT^A07': 'ADT_A06',
  'ADT^A09': 'ADT_A09', 'ADT^A10': 'ADT_A09', 'ADT^A11': 'ADT_A09', 'ADT^A12': 'ADT_A12',
  'ADT^A39': 'ADT_A39', 'ADT^A40': 'ADT_A39', 'ADT^A41': 'ADT_A39', 'ADT^A42': 'ADT_A39',
  'REF^I12': 'REF_I12', 'REF^I13': 'REF_I12', 'REF^I14': 'REF_I12', 'REF^I15': 'REF_I12',
  'ORU^R01': 'ORU_R01', 'MDM^T02': 'MDM_T02', 'MDM^T01': 'MDM_T01', 'PPR^PC1': 'PPR_PC1', 'PPR^PC2': 'PPR_PC1', 'PPR^PC3': 'PPR_PC1',
  'SIU^S12': 'SIU_S12', 'OML^O21': 'OML_O21', 'ORM^O01': 'ORM_O01', 'VXU^V04': 'VXU_V04',
};

/** The message structure (table 0354) of a type and trigger event, e.g. ADT^A04 → ADT_A01. */
export function structureFor(type: string, trigger: string): string | undefined {
  return STRUCTURES[`${type}^${trigger}`];
}

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

function splitField(raw: string, d: Hl7Delimiters): Hl7Field {
  return raw.split(d.repetition).map((rep) => rep.split(d.component).map((comp) => comp.split(d.subcomponent).map((sub) => unescape(sub, d))));
}

/** Parses a decoded message. Throws OutcomeError('structure') when it is not an HL7 v2 message. */
export function parseHl7(input: string): Hl7Message {
  const text = normaliseSegments(input);
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

  const segments: Hl7Segment[] = text.split('\r').map((line, index) => {
    const name = line.slice(0, 3);
    if (!/^[A-Z][A-Z0-9]{2}$/.test(name) || (line.length > 3 && line[3] !== d.field)) {
      throw new OutcomeError('structure', `segment ${index + 1} does not start with a segment id and the field separator`, `segment ${index + 1}`);
    }
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

  const msh = segments[0];
  const get = (f: number, c = 1): string => msh.fields[f]?.[0]?.[c - 1]?.[0] ?? '';
  const messageType = get(9, 1);
  const triggerEvent = get(9, 2);
  if (!messageType) throw new OutcomeError('structure', 'MSH-9 (message type) is empty', 'MSH-9');
  const structure = get(9, 3) || STRUCTURES[`${messageType}^${triggerEvent}`] || `${messageType}_${triggerEvent}`;
  return { delimiters: d, segments, messageType, triggerEvent, structure, controlId: get(10), version: get(12) };
}
