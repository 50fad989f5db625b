/**
 * HL7 v2 acknowledgements, built here (not by a parser library): MSH with sender and receiver swapped, a new
 * control id, version and processing id echoed; MSA-1 code and MSA-2 = the original MSH-10; one ERR segment
 * per error issue with its location (ERR-2), HL7 table 0357 code (ERR-3), severity (ERR-4) and text (ERR-8).
 * Works from the raw MSH alone, so even an unparseable message gets a correct AR.
 *
 * @see HL7 v2.5.1 §2.9 (acknowledgement rules), §2.15.8 (ACK), §2.15.5 (ERR); tables 0008, 0155, 0357, 0516
 */
import crypto from 'node:crypto';
import type { OperationOutcomeIssue } from '../../fhir/types.js';
import { CATEGORIES, type OutcomeError } from '../../fhir/outcome.js';
import { escape } from './parse.js';
import type { Hl7Delimiters } from './message.js';

export type AckCode = 'AA' | 'AE' | 'AR' | 'CA' | 'CE' | 'CR';

/** The MSH fields an ACK needs, read by splitting the raw MSH (no parser, no decoding beyond the delimiters). */
export interface RawMsh {
  delimiters: Hl7Delimiters;
  sendingApplication: string;
  sendingFacility: string;
  receivingApplication: string;
  receivingFacility: string;
  messageType: string;
  triggerEvent: string;
  controlId: string;
  processingId: string;
  version: string;
  /** MSH-15: accept acknowledgment type (table 0155) */
  acceptAckType: string;
  /** MSH-16: application acknowledgment type (table 0155) */
  appAckType: string;
  charset: string;
}

const DEFAULT_DELIMITERS: Hl7Delimiters = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };

export function readMsh(text: string): RawMsh | undefined {
  const line = text.replace(/^\uFEFF/, '').split(/\r\n|\n|\r/, 1)[0];
  if (!line.startsWith('MSH') || line.length < 4) return undefined;
  const fs = line[3];
  const parts = line.split(fs);
  const enc = parts[1] ?? '';
  const d: Hl7Delimiters = {
    field: fs,
    component: enc[0] ?? '^',
    repetition: enc[1] ?? '~',
    escape: enc[2] ?? '\\',
    subcomponent: enc[3] ?? '&',
  };
  // parts[n] is MSH-(n+1): MSH-1 is the separator itself
  const f = (n: number): string => parts[n - 1] ?? '';
  const type = f(9).split(d.component);
  return {
    delimiters: d,
    sendingApplication: f(3),
    sendingFacility: f(4),
    receivingApplication: f(5),
    receivingFacility: f(6),
    messageType: type[0] ?? '',
    triggerEvent: type[1] ?? '',
    controlId: f(10),
    processingId: f(11),
    version: f(12).split(d.component)[0],
    acceptAckType: f(15),
    appAckType: f(16),
    charset: f(18),
  };
}

/**
 * Which acknowledgement to send for a processing outcome, or null for none (table 0155: AL always, NE never,
 * ER only on error, SU only on success).
 * - Original mode (MSH-15 and MSH-16 empty): the application ack (AA/AE/AR), always.
 * - Enhanced mode: the application ack when MSH-16 asks for one; else the accept ack (CA/CE/CR — we accept only
 *   after the message is stored) when MSH-15 asks for one; else nothing. Both go back on the same connection,
 *   one per message, after the durable write.
 */
export function ackToSend(msh: RawMsh | undefined, app: 'AA' | 'AE' | 'AR'): AckCode | null {
  const accept = (msh?.acceptAckType ?? '').toUpperCase();
  const application = (msh?.appAckType ?? '').toUpperCase();
  if (!accept && !application) return app;
  const success = app === 'AA';
  const wants = (rule: string): boolean => rule === 'AL' || (rule === 'ER' && !success) || (rule === 'SU' && success);
  if (wants(application)) return app;
  if (wants(accept)) return app === 'AA' ? 'CA' : app === 'AE' ? 'CE' : 'CR';
  return null;
}

/** `PID-3.1` → `PID^1^3^1`; `PID[2]-5` → `PID^2^5` (ERR-2, ERL datatype: segment ^ sequence ^ field ^ component). */
export function errLocation(expression: string | undefined, d: Hl7Delimiters): string {
  const m = /^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(expression ?? '');
  if (!m) return '';
  const [, seg, seq, field, comp, sub] = m;
  return [seg, seq ?? '1', field, ...(comp ? [comp] : []), ...(sub ? [sub] : [])].join(d.component);
}

const TABLE_0357: Record<string, string> = {
  '0': 'Message accepted',
  '100': 'Segment sequence error',
  '101': 'Required field missing',
  '102': 'Data type error',
  '103': 'Table value not found',
  '200': 'Unsupported message type',
  '201': 'Unsupported event code',
  '202': 'Unsupported processing id',
  '203': 'Unsupported version id',
  '204': 'Unknown key identifier',
  '205': 'Duplicate key identifier',
  '206': 'Application record locked',
  '207': 'Application internal error',
};

function hl7Timestamp(d = new Date()): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}+0000`;
}

export interface AckInput {
  code: AckCode;
  /** errors and warnings to report in ERR segments */
  errors?: OutcomeError[];
  /** extra issues (warnings, information) */
  issues?: OperationOutcomeIssue[];
  /** MSA-3 text */
  text?: string;
  /** our own application and facility names, used when the message named no receiver */
  self?: { application: string; facility: string };
}

/** Builds the ACK for a (possibly broken) message from its raw text. */
export function buildAck(rawText: string, input: AckInput): string {
  const msh = readMsh(rawText);
  const d = msh?.delimiters ?? DEFAULT_DELIMITERS;
  const enc = `${d.component}${d.repetition}${d.escape}${d.subcomponent}`;
  const e = (v: string): string => escape(v, d);
  const fields = [
    'MSH',
    enc,
    msh?.receivingApplication || input.self?.application || 'CARE-GATEWAY',
    msh?.receivingFacility || input.self?.facility || '',
    msh?.sendingApplication ?? '',
    msh?.sendingFacility ?? '',
    hl7Timestamp(),
    '',
    ['ACK', msh?.triggerEvent ?? '', 'ACK'].join(d.component),
    `ACK${crypto.randomUUID().replace(/-/g, '').slice(0, 17)}`,
    msh?.processingId || 'P',
    msh?.version || '2.5.1',
  ];
  if (msh?.charset) fields.push('', '', '', '', '', msh.charset);
  const segments = [fields.join(d.field)];
  const firstError = input.errors?.[0]?.outcome.issue.find((i) => i.severity === 'error' || i.severity === 'fatal');
  const msaText = input.text ?? (firstError ? (firstError.diagnostics ?? '').slice(0, 80) : '');
  segments.push(['MSA', input.code, e(msh?.controlId ?? ''), e(msaText)].join(d.field));
  for (const err of input.errors ?? []) {
    const err3 = CATEGORIES[err.category].err3;
    for (const i of err.outcome.issue) segments.push(errSegment(i, err3, d, e));
  }
  for (const i of input.issues ?? []) segments.push(errSegment(i, i.severity === 'information' ? '0' : '207', d, e));
  return segments.join('\r') + '\r';
}

function errSegment(i: OperationOutcomeIssue, err3: string, d: Hl7Delimiters, e: (v: string) => string): string {
  const severity = i.severity === 'warning' ? 'W' : i.severity === 'information' ? 'I' : 'E';
  const where = i.expression?.[0];
  // ERR-1 (v2.3 location), ERR-2 location, ERR-3 code ^ text ^ HL70357, ERR-4 severity, ERR-5..7 empty, ERR-8 user message
  return [
    'ERR',
    '',
    errLocation(where, d),
    [err3, TABLE_0357[err3] ?? '', 'HL70357'].join(d.component),
    severity,
    '',
    '',
    '',
    e(i.diagnostics ?? i.details?.text ?? ''),
  ].join(d.field);
}
