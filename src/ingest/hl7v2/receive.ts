/**
 * One receive path for HL7 v2, whether it came over MLLP or HTTP:
 * store raw in the inbox (committed, durable) → recognise retransmissions → decode, parse, map, assemble →
 * build the ACK → save it with the entry → answer. An ACK never leaves before the raw bytes are stored.
 *
 * Retransmission (same MSH-3/4 and MSH-10): same content → the stored ACK is replayed and nothing is processed
 * again; other content → AR with ERR 205 (duplicate key), the new bytes kept but not processed.
 */
import { CATEGORIES, OutcomeError, toOutcomeError } from '../../fhir/outcome.js';
import type { OperationOutcomeIssue } from '../../fhir/types.js';
import type { Logger } from '../../log.js';
import type { Store } from '../../store/index.js';
import type { InboxEntry } from '../../store/inbox.js';
import { buildAck, readMsh, ackToSend, type AckCode } from './ack.js';
import { decodeHl7, encodeHl7, rawMsh } from './decode.js';

export interface ProcessOutcome {
  code: 'AA' | 'AE' | 'AR';
  errors: OutcomeError[];
  /** warnings and information (e.g. unused segments) reported in ERR segments with severity W/I */
  issues: OperationOutcomeIssue[];
}

/** Processes one stored, decoded message: parse, map, assemble, write; finishes the inbox entry itself. */
export type Hl7Processor = (entry: InboxEntry, text: string) => Promise<ProcessOutcome>;

export interface ReceiveResult {
  /** the ACK bytes to send (null when MSH-15/16 asked for none) */
  ack: Buffer | null;
  ackText: string;
  code: AckCode;
  /** HTTP status for POST /hl7v2 */
  status: number;
  inboxId?: string;
}

export class Hl7Receiver {
  constructor(
    private readonly store: Store,
    private readonly process: Hl7Processor,
    private readonly opts: { defaultCharset: string; logger: Logger },
  ) {}

  async receive(payload: Buffer, channel: 'mllp' | 'hl7v2-http'): Promise<ReceiveResult> {
    const headText = rawMsh(payload);
    const msh = readMsh(headText);
    const sender = msh ? `${msh.sendingApplication}|${msh.sendingFacility}` : undefined;
    const controlId = msh?.controlId || undefined;

    let decoded: ReturnType<typeof decodeHl7> | undefined;
    let decodeError: OutcomeError | undefined;
    try {
      decoded = decodeHl7(payload, this.opts.defaultCharset);
    } catch (err) {
      decodeError = toOutcomeError(err);
    }
    const charset = decoded?.charset ?? 'latin1';

    if (!msh || decodeError) {
      const error = decodeError ?? new OutcomeError('structure', 'not an HL7 v2 message: it must start with an MSH segment', 'MSH');
      const { entry } = await this.store.inbox.receive({ channel, payload, sender, controlId, contentType: 'x-application/hl7-v2+er7', rejectReason: error.message });
      return this.answer(entry.id, headText, error.outcome.issue[0].code === 'invalid' ? 'AE' : 'AR', [error], [], charset);
    }

    const stored = await this.store.inbox.receive({ channel, payload, sender, controlId, contentType: 'x-application/hl7-v2+er7', dedupe: true });
    const log = this.opts.logger.child({ inbox: stored.entry.id, controlId });
    if (stored.duplicate === 'same' && stored.original?.ack) {
      log.info('hl7v2 retransmission; stored ACK replayed');
      const ackText = stored.original.ack;
      const code = (/\rMSA\|([A-Z]{2})/.exec(ackText)?.[1] ?? 'AA') as AckCode;
      return { ack: encodeHl7(ackText, charset), ackText, code, status: statusOf(code, undefined), inboxId: stored.entry.id };
    }
    if (stored.duplicate === 'different') {
      log.warn('hl7v2 control id reused with other content; refused');
      const e = new OutcomeError('conflict', `control id ${controlId} from ${sender} was already received with other content`, 'MSH-10');
      return this.answer(stored.entry.id, headText, 'AR', [e], [], charset, msh);
    }
    // new, or a retransmission of one whose processing never finished: process (idempotently) now
    const entry = stored.duplicate === 'same' && stored.original ? stored.original : stored.entry;
    let outcome: ProcessOutcome;
    try {
      outcome = await this.process(entry, decoded!.text);
    } catch (err) {
      const e = toOutcomeError(err);
      log.error('hl7v2 processing failed', { category: e.category, error: err instanceof Error ? err.message : String(err) });
      await this.store.inbox.finish(entry.id, { status: 'failed', reason: e.message, outcome: e.outcome }).catch(() => undefined);
      outcome = { code: 'AR', errors: [e.category === 'fault' ? new OutcomeError('fault', 'the message was stored but could not be processed; it will be retried') : e], issues: [] };
    }
    log.info('hl7v2 message processed', { code: outcome.code, type: `${msh.messageType}^${msh.triggerEvent}` });
    return this.answer(entry.id, headText, outcome.code, outcome.errors, outcome.issues, charset, msh);
  }

  private async answer(
    inboxId: string,
    headText: string,
    code: 'AA' | 'AE' | 'AR',
    errors: OutcomeError[],
    issues: OperationOutcomeIssue[],
    charset: string,
    msh = readMsh(headText),
  ): Promise<ReceiveResult> {
    // the application outcome is always saved; what goes back depends on MSH-15/16
    const sent = ackToSend(msh, code);
    const ackText = buildAck(headText, { code: sent ?? code, errors, issues });
    await this.store.inbox.saveAck(inboxId, ackText);
    return { ack: sent ? encodeHl7(ackText, charset) : null, ackText, code: sent ?? code, status: statusOf(code, errors[0]), inboxId };
  }
}

function statusOf(code: AckCode, err: OutcomeError | undefined): number {
  if (code === 'AA' || code === 'CA') return 200;
  if (code === 'CE') return 422;
  if (err) return CATEGORIES[err.category].http;
  return code === 'AE' ? 422 : 400;
}
