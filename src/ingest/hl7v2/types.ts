/**
 * What the receive path (receive.ts, receiver.ts) and the processing (process.ts) hand each other: a message's
 * conversion and its outcome. Kept apart so neither needs the other.
 */
import type { OperationOutcomeIssue } from '../../fhir/types.js';
import type { OutcomeError } from '../../fhir/outcome.js';
import type { InboxEntry } from '../../store/inbox.js';
import type { Conversion } from '../../mapping/hl7v2/convert.js';

/** The outcome of processing one stored, decoded message. */
export interface ProcessOutcome {
  code: 'AA' | 'AE' | 'AR';
  /** errors, one ERR per issue */
  errors: OutcomeError[];
  /** warnings and information (e.g. unused segments), reported as ERR with severity W/I */
  issues?: OperationOutcomeIssue[];
  /** the person the message is about, when known at the answer (an ACK after conversion) */
  patientKey?: string;
}

/**
 * What converting one message decided: converted (with the warnings that go back in the ACK), refused (AE/AR; the
 * entry is recorded as rejected with `reason` and `record`), or a fault of ours (not processed now).
 */
export type Converted =
  | { kind: 'converted'; conv: Conversion; notes: OperationOutcomeIssue[]; /** the further patient pairs of a merge message */ also?: Conversion[] }
  | { kind: 'refused'; outcome: ProcessOutcome; reason: string; record: unknown }
  | { kind: 'fault'; error: Error };

/** Processes one stored, decoded inbox entry (process.ts); finishes the entry itself. */
export type Hl7Processor = (entry: InboxEntry, text: string) => Promise<ProcessOutcome>;

/** A stored, decoded message waiting to be processed. */
export interface Hl7Item {
  entry: InboxEntry;
  text: string;
  /** its conversion, when made already (the ACK went back after conversion) */
  converted?: { conv: Conversion; notes: OperationOutcomeIssue[] };
}

/** Processes several stored, decoded entries together; one result per item, in order (an Error: not processed now). */
export type Hl7BatchProcessor = (items: Hl7Item[]) => Promise<(ProcessOutcome | Error)[]>;

