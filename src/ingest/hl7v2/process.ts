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
import { assembleMany, type AssemblyResult } from '../../careplan/assemble.js';
import type { Contribution } from '../../county/contribution.js';
import { inUnitOfWork } from '../../store/unit-of-work.js';
import { convertHl7, type Conversion } from '../../mapping/hl7v2/convert.js';
import { facilityCharset } from '../../mapping/hl7v2/load.js';
import { parseHl7 } from '../../hl7v2/parse.js';
import { assertValidWithProfiles } from '../../write-checks.js';
import { decodeHl7 } from '../../hl7v2/decode.js';
import { municipalityOfResidence, unplacedEstonianAddress } from '../../county/directory.js';
import type { Converted, Hl7BatchProcessor, Hl7Item, Hl7Processor, ProcessOutcome } from './types.js';

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
    flags: conv.flags,
    team: conv.team,
    merge: conv.merge,
  };
}

type Finish = Parameters<Store['inbox']['finishMany']>[0][number];

/**
 * Parses and maps one message. With `validate`, the resources are also checked as the store will check them on
 * write (FHIR R4 schema, base rules, the project's profiles), so a message acknowledged before its resources are
 * committed (`HL7_ACK_AFTER=conversion`) was refused then if its content is wrong, not later.
 */
export function convertMessage(text: string, opts: { validate?: boolean } = {}): Converted {
  let conv: Conversion;
  let also: Conversion[] = [];
  try {
    const pairs = mergePairs(text);
    conv = convertHl7(parseHl7(pairs[0]));
    // ADT^A40 (and A39/A41/A42) may carry several PID/MRG pairs: every pair is a merge of its own, all applied
    also = pairs.slice(1).map((t, k) => {
      const c = convertHl7(parseHl7(t));
      for (const i of c.issues) i.expression = (i.expression ?? []).map((x) => x.replace(/^(PID|PD1|MRG|PV1)\b/, `$1[${k + 2}]`));
      return c;
    });
    for (const c of [conv, ...also]) {
      if (opts.validate) for (const r of [c.patient, ...(c.organization ? [c.organization] : []), ...c.resources]) assertValidWithProfiles(r);
    }
    for (const c of also) conv.issues.push(...c.issues);
  } catch (err) {
    const e = toOutcomeError(err);
    if (e.category === 'fault') return { kind: 'fault', error: err instanceof Error ? err : new Error(String(err)) };
    return { kind: 'refused', reason: e.message, record: e.outcome, outcome: { code: e.category === 'invalid' ? 'AE' : 'AR', errors: [e], issues: [] } };
  }
  // where the person lives decides their municipality: an Estonian address none of whose parts names one is said
  const current = (conv.patient.address ?? []).filter((a) => !a.period?.end && a.use !== 'old');
  if (current.length && !municipalityOfResidence(conv.patient) && current.some(unplacedEstonianAddress)) {
    conv.issues.push({
      severity: 'warning',
      code: 'incomplete',
      diagnostics: 'PID-11: the municipality of residence cannot be determined from the address (no EHAK code in XAD-9, no municipality or settlement the directory knows in XAD-3/4/8 or the street); the care team keeps the municipality it had',
      expression: ['PID-11'],
    });
  }
  const errors = conv.issues.filter((x) => x.severity === 'error' || x.severity === 'fatal');
  const notes = conv.issues.filter((x) => x.severity === 'warning');
  if (errors.length) {
    const e = OutcomeError.fromIssues('invalid', errors);
    return { kind: 'refused', reason: e.message, record: { resourceType: 'OperationOutcome', issue: conv.issues }, outcome: { code: 'AE', errors: [e], issues: notes } };
  }
  return { kind: 'converted', conv, notes, ...(also.length ? { also } : {}) };
}

/**
 * A merge message (A39–A42) with several patient groups (PID [PD1] MRG [PV1]) as one message per group, each with the
 * message's own header: the merges are independent, and each is converted as a message of one pair would be. Any
 * other message is itself.
 */
function mergePairs(text: string): string[] {
  const segments = text.split('\r').filter(Boolean);
  const msh = segments[0] ?? '';
  const trigger = /^MSH\|[^|]*(?:\|[^|]*){6}\|([^|]*)/.exec(msh)?.[1]?.split('^')[1] ?? '';
  if (!['A39', 'A40', 'A41', 'A42'].includes(trigger)) return [text];
  const firstPid = segments.findIndex((s) => s.startsWith('PID|'));
  if (firstPid < 0 || segments.filter((s) => s.startsWith('PID|')).length < 2) return [text];
  const header = segments.slice(0, firstPid);
  const groups: string[][] = [];
  for (const s of segments.slice(firstPid)) {
    if (s.startsWith('PID|') || groups.length === 0) groups.push([]);
    groups[groups.length - 1].push(s);
  }
  return groups.map((g) => [...header, ...g].join('\r'));
}

/**
 * Processes several stored messages together: each is parsed and converted on its own (unless the item brings its
 * conversion); those that convert are assembled into the shared plans in ONE unit of work (one transaction, a
 * handful of statements whatever the batch size) that also finishes every entry. When the batch as a whole fails
 * (a concurrent change, a deadlock, a database error), each message is processed alone, so one message can never
 * hold back the others. Results are in input order; an Error is a message that could not be processed now (the
 * receiver answers AR and the entry is marked failed).
 *
 * `giveWay` (messages acknowledged after conversion, committed in the background): awaited between contributions
 * and before the writes, so a batch does not hold back messages waiting for their ACK (Hl7Receiver.giveWay).
 */
export function hl7BatchProcessor(store: Store, opts: { giveWay?: () => Promise<void> } = {}): Hl7BatchProcessor {
  const run = async (items: Hl7Item[]): Promise<(ProcessOutcome | Error)[]> => {
    const out: (ProcessOutcome | Error | undefined)[] = items.map(() => undefined);
    const finishes: Finish[] = [];
    const converted: { i: number; conv: Conversion; notes: OperationOutcomeIssue[] }[] = [];
    items.forEach((item, i) => {
      const c: Converted = item.converted ? { kind: 'converted', ...item.converted } : convertMessage(item.text);
      if (c.kind === 'fault') out[i] = c.error;
      else if (c.kind === 'refused') {
        finishes.push({ id: item.entry.id, status: 'rejected', reason: c.reason, outcome: c.record });
        out[i] = c.outcome;
      } else for (const conv of [c.conv, ...(c.also ?? [])]) converted.push({ i, conv, notes: c.notes });
    });

    // one unit of work for the batch; a concurrent change or deadlock is rerun inside (inUnitOfWork)
    const commit = (): Promise<void> =>
      inUnitOfWork(store.repo, async (w) => {
        const contributions = converted.map(({ i, conv }) => {
          const entry = items[i].entry;
          return contributionOf(conv, entry.id, `HL7 v2 ${conv.event.type}^${conv.event.trigger} control id ${entry.controlId ?? '?'} from ${entry.sender ?? '?'}`);
        });
        const results = await assembleMany(w, contributions, { between: opts.giveWay });
        const done: Finish[] = [...finishes];
        // one entry, one outcome: a message that made several contributions (the pairs of a merge) is processed when
        // every one was applied; any refused one makes it AE, naming it
        const byItem = new Map<number, { conv: Conversion; notes: OperationOutcomeIssue[]; r: AssemblyResult | OutcomeError }[]>();
        results.forEach((r, k) => {
          const { i, conv, notes } = converted[k];
          byItem.set(i, [...(byItem.get(i) ?? []), { conv, notes, r }]);
        });
        for (const [i, parts] of byItem) {
          const id = items[i].entry.id;
          const failed = parts.map((p) => p.r).filter((r): r is OutcomeError => r instanceof OutcomeError);
          const { conv, notes } = parts[0];
          if (failed.length) {
            // the converted resources failed validation or a state rule: the content is wrong
            done.push({ id, status: 'rejected', reason: failed.map((e) => e.message).join('; '), outcome: failed[0].outcome });
            out[i] = { code: 'AE', errors: failed, issues: notes };
          } else {
            const ok = parts.map((p) => p.r as AssemblyResult);
            done.push({ id, status: 'processed', produced: ok.flatMap((r) => r.written), patientKey: ok[0].patientId, outcome: { resourceType: 'OperationOutcome', issue: conv.issues } });
            out[i] = { code: 'AA', errors: [], issues: notes };
          }
        }
        await store.inbox.finishMany(done, w.tx); // assembleMany has flushed: same transaction, after the writes
      });

    try {
      await commit();
    } catch (err) {
      if (converted.length <= 1 && finishes.length === 0) {
        for (const { i } of converted) out[i] = err instanceof Error ? err : new Error(String(err));
      } else {
        // one message alone must not hold back the others: each on its own
        await store.inbox.finishMany(finishes);
        for (const one of converted) {
          const [r] = await run([items[one.i]]);
          out[one.i] = r;
        }
      }
    }
    return out.map((o) => o ?? new Error('message was not processed'));
  };
  return run;
}

/** One message at a time (start-up recovery, $reprocess): a batch of one; it finishes the entry itself. */
export function hl7Processor(store: Store): Hl7Processor {
  const batch = hl7BatchProcessor(store);
  return async (entry: InboxEntry, text: string): Promise<ProcessOutcome> => {
    const [r] = await batch([{ entry, text }]);
    if (r instanceof Error) throw r;
    return r;
  };
}

/** Runs a stored entry again from its raw bytes (start-up recovery, admin $reprocess); it finishes the entry itself. */
export function reprocessHl7(store: Store, defaultCharset: string): (entry: InboxEntry & { payload: Buffer }) => Promise<void> {
  const process = hl7Processor(store);
  return async (entry) => {
    let text: string;
    try {
      text = decodeHl7(entry.payload, defaultCharset, facilityCharset).text;
    } catch (err) {
      const e = toOutcomeError(err);
      await store.inbox.finish(entry.id, { status: 'rejected', reason: e.message, outcome: e.outcome });
      return;
    }
    await process(entry, text);
  };
}
