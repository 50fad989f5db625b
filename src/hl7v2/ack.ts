/**
 * HL7 v2 acknowledgements, built here from the raw MSH (no parser library, no `createAck`), so that even a message
 * that cannot be parsed gets a correct ACK.
 *
 * - MSH: the message's own field separator and encoding characters; MSH-3/4 ← original MSH-5/6, MSH-5/6 ←
 *   original MSH-3/4, MSH-7 now, MSH-9 `ACK^<trigger>^ACK`, a new MSH-10, MSH-11, MSH-12 and MSH-18 echoed.
 * - MSA: MSA-1 code (table 0008), MSA-2 = original MSH-10, MSA-3 optional text.
 * - ERR: one per OperationOutcome issue: ERR-2 location (ERL), ERR-3 code from table 0357 (via CATEGORIES in
 *   outcome.ts), ERR-4 severity (table 0516: E/W/I), ERR-8 user message. All text is escaped (§2.7).
 * - When to send at all: MSH-15 / MSH-16 and table 0155 (see `ackToSend`).
 *
 * @see HL7 v2.5.1 ch. 2: §2.7 (escape sequences), §2.9 (acknowledgment modes), §2.14.5 ERL, §2.15.5 ERR,
 *   §2.15.8 MSA, §2.15.9 MSH; tables 0008, 0155, 0357, 0516
 */
import crypto from 'node:crypto';
import type { OperationOutcomeIssue } from '../fhir/types.js';
import { CATEGORIES, type OutcomeError } from '../fhir/outcome.js';
import type { Hl7Delimiters } from './message.js';

/** MSA-1 (table 0008): original mode AA/AE/AR, enhanced-mode accept acks CA/CE/CR. */
export type AckCode = 'AA' | 'AE' | 'AR' | 'CA' | 'CE' | 'CR';

/** MSH-15 / MSH-16 (table 0155); '' when the field is empty. */
export type AckType = 'AL' | 'NE' | 'ER' | 'SU' | '';

/** The MSH fields an ACK needs, exactly as written (still escaped; the ACK reuses the same delimiters). */
export interface RawMsh {
  delimiters: Hl7Delimiters;
  /** MSH-2 as written (4 characters, 5 with the v2.7 truncation character) */
  encodingCharacters: string;
  /** MSH-3 */
  sendingApp: string;
  /** MSH-4 */
  sendingFacility: string;
  /** MSH-5 */
  receivingApp: string;
  /** MSH-6 */
  receivingFacility: string;
  /** MSH-9, whole (e.g. `ADT^A03^ADT_A03`) */
  messageType: string;
  /** MSH-9.2 */
  triggerEvent: string;
  /** MSH-10 */
  controlId: string;
  /** MSH-11 */
  processingId: string;
  /** MSH-12, whole */
  version: string;
  /** MSH-15 accept acknowledgment type (table 0155), raw */
  acceptAckType: string;
  /** MSH-16 application acknowledgment type (table 0155), raw */
  appAckType: string;
  /** MSH-18, whole */
  charset: string;
}

const DEFAULT_DELIMITERS: Hl7Delimiters = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };

/**
 * Reads the MSH of a (possibly broken) message by splitting its first line on MSH-1. Missing fields are ''.
 * Returns undefined when the text does not start with `MSH` and a plausible field separator.
 */
export function readMsh(rawText: string): RawMsh | undefined {
  const line = rawText.replace(/^\uFEFF/, '').split(/\r\n|\n|\r/, 1)[0] ?? '';
  if (!line.startsWith('MSH') || line.length < 4) return undefined;
  const fs = line[3];
  if (/[A-Za-z0-9\s]/.test(fs)) return undefined;
  const parts = line.split(fs);
  // parts[0] is "MSH", parts[1] is MSH-2: MSH-n is parts[n - 1] because MSH-1 is the separator itself
  const f = (n: number): string => parts[n - 1] ?? '';
  const enc = f(2);
  const d: Hl7Delimiters = {
    field: fs,
    component: enc[0] || '^',
    repetition: enc[1] || '~',
    escape: enc[2] || '\\',
    subcomponent: enc[3] || '&',
  };
  return {
    delimiters: d,
    encodingCharacters: enc || '^~\\&',
    sendingApp: f(3),
    sendingFacility: f(4),
    receivingApp: f(5),
    receivingFacility: f(6),
    messageType: f(9),
    triggerEvent: f(9).split(d.component)[1] ?? '',
    controlId: f(10),
    processingId: f(11),
    version: f(12),
    acceptAckType: f(15),
    appAckType: f(16),
    charset: f(18),
  };
}

function ackType(v: string | undefined): AckType {
  const t = (v ?? '').trim().toUpperCase();
  return t === 'AL' || t === 'NE' || t === 'ER' || t === 'SU' ? t : '';
}

/** MSH-15 and MSH-16 of a raw message, normalised to table 0155 values ('' when empty or unknown). */
export function ackMode(rawText: string): { accept: AckType; application: AckType } {
  const msh = readMsh(rawText);
  return { accept: ackType(msh?.acceptAckType), application: ackType(msh?.appAckType) };
}

/** Table 0155 for one acknowledgment type: AL always, NE never, ER only on error, SU only on success; '' always. */
export function shouldSendAck(mode: AckType | string, code: AckCode): boolean {
  const success = code === 'AA' || code === 'CA';
  switch (ackType(mode)) {
    case 'NE':
      return false;
    case 'ER':
      return !success;
    case 'SU':
      return success;
    default: // AL, or empty: original mode
      return true;
  }
}

/**
 * Which acknowledgement to send for an application outcome, or null for none.
 *
 * Our choice (we answer on the same MLLP connection, once, after the durable write — a committed store is at
 * least an accept):
 * - MSH-15 and MSH-16 both empty: original mode, the application ack (AA/AE/AR) always.
 * - MSH-16 present: follow it for the application ack (AA/AE/AR).
 * - Otherwise, or when MSH-16 declines: follow MSH-15 and send the accept ack (CA/CE/CR). Strictly MSH-15 governs
 *   accept acks only, but an enhanced-mode sender that asked for one waits for it, so we do not stay silent.
 * - Neither asks: nothing.
 */
export function ackToSend(msh: Pick<RawMsh, 'acceptAckType' | 'appAckType'> | undefined, app: 'AA' | 'AE' | 'AR'): AckCode | null {
  const accept = ackType(msh?.acceptAckType);
  const application = ackType(msh?.appAckType);
  if (!accept && !application) return app;
  if (application && shouldSendAck(application, app)) return app;
  const commit: AckCode = app === 'AA' ? 'CA' : app === 'AE' ? 'CE' : 'CR';
  if (accept && shouldSendAck(accept, commit)) return commit;
  return null;
}

/**
 * An issue location → ERR-2 (ERL: segment ID ^ segment sequence ^ field ^ field repetition ^ component ^
 * subcomponent). `PID-3.1` → `PID^1^3^1^1`; `PID[2]-5` → `PID^2^5`; `PID-3[2].1` → `PID^1^3^2^1`;
 * anything that is not an HL7 position (a FHIRPath) → ''.
 */
export function errLocation(expression: string | undefined, d: Hl7Delimiters = DEFAULT_DELIMITERS): string {
  const m = /^([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+))?(?:\.(\d+))?$/.exec((expression ?? '').trim());
  if (!m) return '';
  const [, seg, seq, field, rep, comp, sub] = m;
  const parts = [seg, seq ?? '1', field];
  if (rep || comp) parts.push(rep ?? '1');
  if (comp) parts.push(comp);
  if (comp && sub) parts.push(sub);
  return parts.join(d.component);
}

/** HL7 table 0357 (message error condition codes), for ERR-3.2. */
export const TABLE_0357: Record<string, string> = {
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

/**
 * Escapes text for an HL7 field with the given delimiters (§2.7): escape → \E\, field → \F\, component → \S\,
 * subcomponent → \T\, repetition → \R\; line breaks → \.br\ .
 */
export function escapeHl7(text: string, d: Hl7Delimiters = DEFAULT_DELIMITERS): string {
  const map = new Map<string, string>([
    [d.escape, 'E'],
    [d.field, 'F'],
    [d.component, 'S'],
    [d.subcomponent, 'T'],
    [d.repetition, 'R'],
  ]);
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    const code = map.get(c);
    if (code) out += `${d.escape}${code}${d.escape}`;
    else if (c === '\r' || c === '\n') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      out += `${d.escape}.br${d.escape}`;
    } else out += c;
  }
  return out;
}

/** Now as an HL7 DTM with the local UTC offset: YYYYMMDDHHMMSS+ZZZZ. */
export function hl7Now(d = new Date()): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const abs = Math.abs(off);
  return (
    `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}` +
    `${sign}${p(Math.floor(abs / 60))}${p(abs % 60)}`
  );
}

/** A new MSH-10 for an ACK: unique, at most 20 characters (the v2.5.1 length of MSH-10). */
export function newControlId(): string {
  return `ACK${crypto.randomBytes(9).toString('hex').slice(0, 17)}`;
}

export interface AckInput {
  /** MSA-1; forced to AR when the message has no MSH at all */
  code: AckCode;
  /** errors to report, one ERR per issue (warnings and information inside ride along with W/I) */
  errors?: OutcomeError[];
  /** extra issues (warnings, information) outside any error */
  issues?: OperationOutcomeIssue[];
  /** MSA-3 text; default: the first error's text */
  text?: string;
  /** our own application and facility, used when the message named no receiver (MSH-5/6 empty) */
  self?: { application: string; facility: string };
}

function severityOf(i: OperationOutcomeIssue): 'E' | 'W' | 'I' {
  return i.severity === 'warning' ? 'W' : i.severity === 'information' ? 'I' : 'E';
}

function errSegment(i: OperationOutcomeIssue, err3: string, d: Hl7Delimiters): string {
  const severity = severityOf(i);
  const code = severity === 'I' ? '0' : err3;
  // ERR-1 (v2.3 location, not valued), ERR-2 location, ERR-3 code ^ text ^ HL70357, ERR-4 severity,
  // ERR-5..7 not valued, ERR-8 user message
  return [
    'ERR',
    '',
    errLocation(i.expression?.[0], d),
    [code, TABLE_0357[code] ?? '', 'HL70357'].join(d.component),
    severity,
    '',
    '',
    '',
    escapeHl7(i.diagnostics ?? i.details?.text ?? '', d),
  ].join(d.field);
}

/**
 * Builds the ACK for a message from its raw (normalised) text; works for a partial MSH and without any MSH
 * (then: default delimiters, empty MSA-2, AR). Returns CR-separated text ending in CR.
 */
export function buildAck(rawText: string, input: AckInput): string {
  const msh = readMsh(rawText);
  const d = msh?.delimiters ?? DEFAULT_DELIMITERS;
  const code: AckCode = msh ? input.code : 'AR';
  const fields = [
    'MSH',
    msh?.encodingCharacters ?? '^~\\&',
    msh?.receivingApp || escapeHl7(input.self?.application ?? 'CARE-GATEWAY', d),
    msh?.receivingFacility || escapeHl7(input.self?.facility ?? '', d),
    msh?.sendingApp ?? '',
    msh?.sendingFacility ?? '',
    hl7Now(),
    '',
    ['ACK', msh?.triggerEvent ?? '', 'ACK'].join(d.component),
    newControlId(),
    msh?.processingId || 'P',
    msh?.version || '2.5.1',
  ];
  if (msh?.charset) fields.push('', '', '', '', '', msh.charset);
  const segments = [fields.join(d.field)];

  const firstError = input.errors?.flatMap((e) => e.outcome.issue).find((i) => i.severity === 'error' || i.severity === 'fatal');
  const msaText = (input.text ?? firstError?.diagnostics ?? firstError?.details?.text ?? '').replace(/\s+/g, ' ').slice(0, 80);
  segments.push(['MSA', code, msh?.controlId ?? '', escapeHl7(msaText, d)].join(d.field));

  for (const err of input.errors ?? []) {
    const err3 = CATEGORIES[err.category].err3;
    for (const i of err.outcome.issue) segments.push(errSegment(i, err3, d));
  }
  for (const i of input.issues ?? []) segments.push(errSegment(i, '207', d));
  return segments.join('\r') + '\r';
}
