/**
 * Processing of a stored HL7 v2 message: parse → map (mappings/hl7v2) → assemble into the shared care plan →
 * write everything with Provenance, and finish the inbox entry in the same transaction.
 *
 * AA: processed. AE: well-formed but its content is wrong (e.g. an isikukood whose checksum fails); nothing is
 * written, the entry is kept as rejected with the reasons. AR: cannot be processed at all (unparseable,
 * unsupported type). Processing is idempotent: the same message again writes nothing new.
 */
import type { OperationOutcomeIssue } from '../../fhir/types.js';
import { OutcomeError, toOutcomeError } from '../../fhir/outcome.js';
import type { Store } from '../../store/index.js';
import type { InboxEntry } from '../../store/inbox.js';
import { assemble, type Contribution } from '../../careplan/assemble.js';
import { convertHl7, type Conversion } from '../../mapping/hl7v2.js';
import { parseHl7 } from './parse.js';
import { decodeHl7 } from './decode.js';
import type { Hl7Processor, ProcessOutcome } from './receive.js';

/** The contribution a converted message makes to the shared plan. */
export function contributionOf(conv: Conversion, inboxId: string, description: string): Contribution {
  return {
    channel: 'hl7v2',
    inboxId,
    description,
    organization: conv.organization,
    author: conv.author,
    patient: conv.patient,
    resources: conv.resources.filter((r) => !(conv.organization && r.resourceType === 'Organization' && r.id === conv.organization.id)),
    event: conv.event.plan,
    encounterId: conv.encounterId,
    occurredAt: conv.event.occurredAt,
    segments: conv.segments,
    team: conv.team,
    merge: conv.merge,
  };
}

export function hl7Processor(store: Store): Hl7Processor {
  return async (entry: InboxEntry, text: string): Promise<ProcessOutcome> => {
    let conv: Conversion;
    try {
      const msg = parseHl7(text);
      conv = convertHl7(msg);
    } catch (err) {
      const e = toOutcomeError(err);
      if (e.category === 'fault') throw err;
      await store.inbox.finish(entry.id, { status: 'rejected', reason: e.message, outcome: e.outcome });
      return { code: e.category === 'invalid' ? 'AE' : 'AR', errors: [e], issues: [] };
    }
    const errors = conv.issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
    const notes: OperationOutcomeIssue[] = conv.issues.filter((i) => i.severity === 'warning');
    if (errors.length) {
      const e = OutcomeError.fromIssues('invalid', errors);
      await store.inbox.finish(entry.id, { status: 'rejected', reason: e.message, outcome: { resourceType: 'OperationOutcome', issue: conv.issues } });
      return { code: 'AE', errors: [e], issues: notes };
    }
    const description = `HL7 v2 ${conv.event.type}^${conv.event.trigger} control id ${entry.controlId ?? '?'} from ${entry.sender ?? '?'}`;
    try {
      await store.repo.transaction(async (w) => {
        const result = await assemble(w, contributionOf(conv, entry.id, description));
        await store.inbox.finish(
          entry.id,
          { status: 'processed', produced: result.written, patientKey: result.patientId, outcome: { resourceType: 'OperationOutcome', issue: conv.issues } },
          w.tx,
        );
      });
    } catch (err) {
      const e = toOutcomeError(err);
      if (e.category === 'fault' || e.category === 'busy') throw err;
      // the converted resources failed validation or a state rule: the content is wrong
      await store.inbox.finish(entry.id, { status: 'rejected', reason: e.message, outcome: e.outcome });
      return { code: 'AE', errors: [e], issues: notes };
    }
    return { code: 'AA', errors: [], issues: notes };
  };
}

/** Runs a stored entry again from its raw bytes (start-up recovery, admin $reprocess); it finishes the entry itself. */
export function reprocessHl7(store: Store, defaultCharset: string): (entry: InboxEntry & { payload: Buffer }) => Promise<void> {
  const process = hl7Processor(store);
  return async (entry) => {
    let text: string;
    try {
      text = decodeHl7(entry.payload, defaultCharset).text;
    } catch (err) {
      const e = toOutcomeError(err);
      await store.inbox.finish(entry.id, { status: 'rejected', reason: e.message, outcome: e.outcome });
      return;
    }
    await process(entry, text);
  };
}
