/**
 * The message log: `GET /admin/messages?status=…` lists inbox entries (metadata only — no payloads, so no
 * patient data in lists), `GET /admin/messages/{id}` shows one entry with its raw payload, outcome and the
 * resources it produced, and `POST /admin/messages/{id}/$reprocess` queues a stored entry to run again.
 *
 * Duplicate people (stores written before one isikukood meant one Patient on every route): `GET
 * /admin/patients/$duplicates` lists the isikukoods held by more than one Patient (masked) and which Patient
 * survives; `POST /admin/patients/$merge-duplicates` merges each as an HL7 v2 A40 would (plan and team moved,
 * references re-pointed, the retired Patient kept inactive and `replaced-by` the survivor, Provenance naming the
 * request, which is stored in the inbox first).
 */
import { OutcomeError, notFound } from '../fhir/outcome.js';
import type { InboxStatus } from '../store/inbox.js';
import type { Store } from '../store/index.js';
import { json } from './fhir.js';
import type { Route } from './route.js';
import { duplicateMerge, findDuplicates } from '../careplan/identity.js';
import { assembleMany } from '../careplan/assemble.js';
import { inUnitOfWork } from '../store/unit-of-work.js';

const STATUSES = new Set(['received', 'processing', 'processed', 'rejected', 'failed']);

/** `reprocess` runs one stored entry now (the inbox worker's runById). */
export function adminRoutes(store: Store, reprocess?: (id: string) => Promise<boolean>): { method: string; pattern: RegExp; handler: Route }[] {
  return [
    {
      method: 'GET',
      pattern: /^\/admin\/patients\/\$duplicates$/,
      handler: async () => json(200, { duplicates: await findDuplicates(store.db) }),
    },
    {
      method: 'POST',
      pattern: /^\/admin\/patients\/\$merge-duplicates$/,
      handler: async (req) => {
        const found = await findDuplicates(store.db);
        const { entry } = await store.inbox.receive({ channel: 'fhir', payload: Buffer.from(JSON.stringify({ operation: 'merge-duplicates', duplicates: found })), sender: req.principal?.organization ?? 'admin', contentType: 'application/json' });
        const merged: { survivor: string; retired: string }[] = [];
        for (const d of found) {
          for (const retired of d.patients.filter((p) => p !== d.survivor)) {
            const c = await duplicateMerge(store.db, d.survivor, retired, entry.id);
            const [r] = await inUnitOfWork(store.repo, (w) => assembleMany(w, [c]));
            if (r instanceof OutcomeError) throw r;
            merged.push({ survivor: d.survivor, retired });
          }
        }
        await store.inbox.finish(entry.id, { status: 'processed', produced: merged.map((m) => `Patient/${m.retired}`) });
        return json(200, { merged });
      },
    },
    {
      method: 'GET',
      pattern: /^\/admin\/messages$/,
      handler: async (req) => {
        const status = req.query.get('status') ?? undefined;
        if (status && !STATUSES.has(status)) throw new OutcomeError('invalid', `status must be one of ${[...STATUSES].join(', ')}`, 'status');
        const limit = req.query.get('_count');
        const entries = await store.inbox.list({
          status: status as InboxStatus | undefined,
          channel: req.query.get('channel') ?? undefined,
          before: req.query.get('before') ?? undefined,
          limit: limit ? Number(limit) : undefined,
        });
        return json(200, { entries: entries.map(({ outcome: _o, ack: _a, ...meta }) => meta), counts: await store.inbox.counts() });
      },
    },
    {
      method: 'GET',
      pattern: /^\/admin\/messages\/([A-Za-z0-9-]+)$/,
      handler: async (_req, m) => {
        const e = await store.inbox.get(m[1]);
        if (!e) throw notFound(`message ${m[1]}`);
        const { payload, ...rest } = e;
        const text = payload.toString('utf8');
        return json(200, { ...rest, payload: { base64: payload.toString('base64'), text } });
      },
    },
    {
      method: 'POST',
      pattern: /^\/admin\/messages\/([A-Za-z0-9-]+)\/\$reprocess$/,
      handler: async (_req, m) => {
        if (!(await store.inbox.get(m[1]))) throw notFound(`message ${m[1]}`);
        if (reprocess) {
          if (!(await reprocess(m[1]))) throw new OutcomeError('conflict', `message ${m[1]} is being processed right now; try again shortly`);
        } else await store.inbox.requeue(m[1]);
        const e = await store.inbox.get(m[1]);
        const { payload: _p, ...rest } = e!;
        return json(200, rest);
      },
    },
  ];
}
