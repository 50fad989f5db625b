/**
 * Our own, library-independent view of a parsed HL7 v2 message.
 *
 * The parser module (parse.ts) fills it; mapping, ACK building and routing read only this, so the parser
 * library can be replaced without touching them. Every value here is already escape-decoded text.
 *
 * Positions are 1-based as in the HL7 spec: `PID-3.1` is field 3, component 1 of PID. For MSH, MSH-1 is the
 * field separator and MSH-2 the encoding characters, as the standard counts them.
 *
 * @see HL7 v2.5.1 chapter 2.5 (message construction rules) and 2.7 (escape sequences)
 */

/** Subcomponents of one component. */
export type Hl7Component = string[];
/** Components of one repetition. */
export type Hl7Repetition = Hl7Component[];
/** Repetitions of one field. */
export type Hl7Field = Hl7Repetition[];

export interface Hl7Segment {
  /** three-letter segment id, e.g. `PID` */
  name: string;
  /** 0-based position of the segment in the message */
  index: number;
  /** fields[n] is field n (1-based; fields[0] is unused and empty) */
  fields: Hl7Field[];
}

export interface Hl7Delimiters {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  subcomponent: string;
}

export interface Hl7Message {
  delimiters: Hl7Delimiters;
  segments: Hl7Segment[];
  /** MSH-9.1, e.g. `ADT` */
  messageType: string;
  /** MSH-9.2, e.g. `A03` */
  triggerEvent: string;
  /** MSH-9.3, or derived from type + trigger (HL7 table 0354) when empty, e.g. `ADT_A03` */
  structure: string;
  /** MSH-10 */
  controlId: string;
  /** MSH-12 */
  version: string;
}

/** A parsed location such as `PID-3.1.2`; repetition is 1-based too. */
export interface Hl7Location {
  segment: string;
  field: number;
  component?: number;
  subcomponent?: number;
}

export function parseLocation(loc: string): Hl7Location {
  const m = /^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(loc);
  if (!m) throw new Error(`not an HL7 location: ${loc}`);
  return {
    segment: m[1],
    field: Number(m[2]),
    component: m[3] ? Number(m[3]) : undefined,
    subcomponent: m[4] ? Number(m[4]) : undefined,
  };
}

/**
 * The value at field/component/subcomponent of a segment's given repetition ('' when absent).
 * `value(pid, 3, 1)` is PID-3.1 of the first repetition.
 */
export function value(seg: Hl7Segment | undefined, field: number, component = 1, subcomponent = 1, repetition = 1): string {
  return seg?.fields[field]?.[repetition - 1]?.[component - 1]?.[subcomponent - 1] ?? '';
}

/** All repetitions of a field. */
export function repetitions(seg: Hl7Segment | undefined, field: number): Hl7Repetition[] {
  return seg?.fields[field] ?? [];
}

/** First segment with the given name. */
export function firstSegment(msg: Hl7Message, name: string): Hl7Segment | undefined {
  return msg.segments.find((s) => s.name === name);
}

/** Every segment with the given name, in message order. */
export function segmentsNamed(msg: Hl7Message, name: string): Hl7Segment[] {
  return msg.segments.filter((s) => s.name === name);
}
