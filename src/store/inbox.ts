/**
 * The inbox: every inbound payload (HL7 v2, FHIR, social-care file) stored raw, with sender, time, status and
 * reason, in a committed transaction before anything is acknowledged.
 *
 * Status: received → processing → processed | rejected | failed. Work is claimed row by row with
 * `FOR UPDATE SKIP LOCKED` and a lease, so several gateway instances on one PostgreSQL never process the same
 * entry twice. A claim names the instance that made it (`claimed_by`); each instance holds a session advisory lock
 * on its id while it lives (`hold`), so an entry whose instance died is taken over as soon as another instance (the
 * restarted one, say) looks for work — the lock can be taken — and in any case when its lease runs out.
 */
import crypto from 'node:crypto';
import type { Db, Queryable } from './db.js';
import { Journal, type JournalRecord } from './journal.js';

export type InboxStatus = 'received' | 'processing' | 'processed' | 'rejected' | 'failed';
export type InboxChannel = 'mllp' | 'hl7v2-http' | 'fhir' | 'social-care';

export interface InboxInput {
  channel: InboxChannel;
  payload: Buffer;
  sender?: string;
  controlId?: string;
  contentType?: string;
  /** look for an earlier entry with the same sender + control id (HL7 retransmissions) */
  dedupe?: boolean;
  /** store as already claimed by this instance, for inline processing (the default) */
  claim?: boolean;
  /** store as rejected right away (e.g. unparseable), with this reason */
  rejectReason?: string;
  /** with `rejectReason`: what the refusal found (an OperationOutcome), as `finish` would record it */
  outcome?: unknown;
  /** the answer, when it is known before the entry is stored (HL7 ACK after conversion): kept with a new entry */
  ack?: string;
}

export interface InboxEntry {
  id: string;
  channel: InboxChannel;
  sender: string | null;
  controlId: string | null;
  contentHash: string;
  contentType: string | null;
  receivedAt: string;
  status: InboxStatus;
  reason: string | null;
  ack: string | null;
  outcome: unknown;
  produced: string[];
  attempts: number;
  processedAt: string | null;
  duplicateOf: string | null;
  /** the instance that claimed it last (the one processing it, while `processing`) */
  claimedBy: string | null;
}

export interface ReceiveResult {
  entry: InboxEntry;
  /** 'same': an earlier entry had this sender, control id and content; 'different': same id, other content */
  duplicate: 'none' | 'same' | 'different';
  original?: InboxEntry;
}

const LEASE_SECONDS = 120;

/** The session advisory lock an instance holds while it lives is on this prefix and its id. */
const LIVENESS = 'instance|';

/**
 * SQL true for an entry claimed by another instance that is gone: its liveness lock can be taken (held to the end of
 * the statement's transaction, then dropped). `me` is the parameter holding this instance's id. On the embedded
 * store every lock can be taken: one process owns the directory, so a claim by anyone else is a dead process's.
 */
const claimedByTheGone = (me: string): string =>
  `(claimed_by IS NOT NULL AND claimed_by <> ${me} AND pg_try_advisory_xact_lock(hashtextextended('${LIVENESS}' || claimed_by, 0)))`;

const COLUMNS = `id, channel, sender, control_id, content_hash, content_type, received_at, status, reason, ack, outcome,
  produced, attempts, processed_at, duplicate_of, claimed_by`;

function toEntry(r: Record<string, unknown>): InboxEntry {
  return {
    id: String(r.id),
    channel: r.channel as InboxChannel,
    sender: (r.sender as string | null) ?? null,
    controlId: (r.control_id as string | null) ?? null,
    contentHash: String(r.content_hash),
    contentType: (r.content_type as string | null) ?? null,
    receivedAt: new Date(r.received_at as string).toISOString(),
    status: r.status as InboxStatus,
    reason: (r.reason as string | null) ?? null,
    ack: (r.ack as string | null) ?? null,
    outcome: r.outcome ? JSON.parse(String(r.outcome)) : null,
    produced: r.produced ? (JSON.parse(String(r.produced)) as string[]) : [],
    attempts: Number(r.attempts ?? 0),
    processedAt: r.processed_at ? new Date(r.processed_at as string).toISOString() : null,
    duplicateOf: (r.duplicate_of as string | null) ?? null,
    claimedBy: (r.claimed_by as string | null) ?? null,
  };
}

export function sha256(buf: Buffer): string {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

/** An input of receiveMany with what is computed for it before it is stored. */
interface Prepared {
  input: InboxInput;
  id: string;
  contentHash: string;
  sender: string | null;
  controlId: string | null;
}

/** The status a new entry is stored with: rejected at once, or waiting (claimed by this instance unless told not to). */
const initialStatus = (p: Prepared): InboxStatus => (p.input.rejectReason ? 'rejected' : p.input.claim === false ? 'received' : 'processing');

/** `reason` of an entry that reuses an earlier entry's sender and control id with other content. */
const duplicateReason = (p: Prepared, originalId: string | null | undefined): string =>
  `duplicate control id ${p.controlId} from ${p.sender} with different content (first received as ${originalId})`;

/** The entry a stored input becomes; the answer and outcome it brought are kept unless it is a duplicate key. */
function newEntry(p: Prepared, receivedAt: string, status: InboxStatus, reason: string | null, duplicateOf: string | null, claimer: string): InboxEntry {
  const first = duplicateOf === null;
  return {
    id: p.id,
    channel: p.input.channel,
    sender: p.sender,
    controlId: p.controlId,
    contentHash: p.contentHash,
    contentType: p.input.contentType ?? null,
    receivedAt,
    status,
    reason,
    ack: first ? (p.input.ack ?? null) : null,
    outcome: first && p.input.rejectReason ? (p.input.outcome ?? null) : null,
    produced: [],
    attempts: status === 'processing' ? 1 : 0,
    processedAt: status === 'rejected' ? receivedAt : null,
    duplicateOf,
    claimedBy: status === 'processing' ? claimer : null,
  };
}

export class Inbox {
  /** this instance's id, recorded with every claim it makes */
  readonly instance = crypto.randomUUID();

  constructor(
    private readonly db: Db,
    private readonly journal?: Journal,
    /** called after each journal append (the store checkpoints when the journal grows large) */
    private readonly afterJournalAppend?: () => void,
  ) {}

  /** Holds this instance's liveness lock until the returned function is called (the store does, on close). */
  hold(): Promise<() => Promise<void>> {
    return this.db.holdLock(LIVENESS + this.instance);
  }

  /**
   * Stores a payload durably. When this resolves the row is committed (and, in embedded mode, fsync'd to the
   * journal), so the caller may acknowledge.
   */
  async receive(input: InboxInput): Promise<ReceiveResult> {
    return (await this.receiveMany([input]))[0];
  }

  /**
   * Stores several payloads in one transaction (group commit: the HL7 receiver gathers the messages that arrive
   * together). Retransmissions are recognised against stored entries and within the batch.
   */
  async receiveMany(inputs: InboxInput[]): Promise<ReceiveResult[]> {
    const receivedAt = new Date().toISOString();
    const prepared: Prepared[] = inputs.map((input) => ({
      input,
      id: crypto.randomUUID(),
      contentHash: sha256(input.payload),
      sender: input.sender ?? null,
      controlId: input.controlId ?? null,
    }));
    const keyOf = (p: Prepared): string | undefined =>
      p.input.dedupe && p.sender && p.controlId ? `${p.sender}\u0000${p.controlId}` : undefined;
    if (this.db.kind === 'postgres' && !this.journal) return this.receiveInOneStatement(prepared, receivedAt);

    return this.db.transaction(async (tx) => {
      const earlier = new Map<string, InboxEntry>();
      const keyed = prepared.filter((p) => keyOf(p) !== undefined);
      if (keyed.length > 0) {
        const locks = [...new Set(keyed.map((p) => `inbox|${p.sender}|${p.controlId}`))].sort();
        await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k`, [locks]);
        const rows = await tx.query(
          `SELECT DISTINCT ON (sender, control_id) ${COLUMNS} FROM inbox
           WHERE (sender, control_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND duplicate_of IS NULL
           ORDER BY sender, control_id, received_at`,
          [keyed.map((p) => p.sender), keyed.map((p) => p.controlId)],
        );
        for (const r of rows) earlier.set(`${r.sender}\u0000${r.control_id}`, toEntry(r));
      }
      const results: ReceiveResult[] = [];
      const rows: { rec: JournalRecord; status: InboxStatus; payload: Buffer; ack: string | null; outcome: unknown }[] = [];
      for (const p of prepared) {
        const key = keyOf(p);
        const original = key ? earlier.get(key) : undefined;
        const duplicate: ReceiveResult['duplicate'] = original ? (original.contentHash === p.contentHash ? 'same' : 'different') : 'none';
        if (duplicate === 'same' && original) {
          results.push({ entry: original, duplicate, original });
          continue;
        }
        let status = initialStatus(p);
        let reason: string | null = p.input.rejectReason ?? null;
        if (duplicate === 'different') {
          status = 'rejected';
          reason = duplicateReason(p, original?.id);
        }
        const entry = newEntry(p, receivedAt, status, reason, duplicate === 'different' ? (original?.id ?? null) : null, this.instance);
        // the journal keeps what the row needs to be re-inserted; a claim does not outlive the process
        const { id, channel, sender, controlId, contentHash, contentType, duplicateOf } = entry;
        const recStatus = status === 'processing' ? 'received' : status;
        const payload = this.journal ? p.input.payload.toString('base64') : '';
        const rec: JournalRecord = { id, channel, sender, controlId, contentHash, contentType, receivedAt, status: recStatus, reason, duplicateOf, payload };
        // a later message of this batch with the same key is a retransmission of this one
        if (key && duplicate === 'none') earlier.set(key, entry);
        rows.push({ rec, status, payload: p.input.payload, ack: entry.ack, outcome: entry.outcome });
        results.push({ entry, duplicate, original });
      }
      if (rows.length === 0) return results;
      // Journal first: once it is on disk the payload survives anything; the row below is its index.
      if (this.journal) {
        await Promise.all(rows.map((r) => this.journal!.append(r.rec)));
        this.afterJournalAppend?.();
      }
      await tx.query(
        `INSERT INTO inbox (id, channel, sender, control_id, content_hash, content_type, received_at, status, reason,
           payload, duplicate_of, attempts, lease_until, processed_at, ack, outcome, claimed_by)
         SELECT id, ch, snd, cid, hash, ct, $7::timestamptz, st, rsn, pl, dup, CASE WHEN st = 'processing' THEN 1 ELSE 0 END,
           CASE WHEN st = 'processing' THEN now() + make_interval(secs => ${LEASE_SECONDS}) END,
           CASE WHEN st = 'rejected' THEN now() END, ack, oc, CASE WHEN st = 'processing' THEN $14 END
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[], $9::text[], $10::bytea[], $11::text[], $12::text[], $13::text[])
           AS u(id, ch, snd, cid, hash, ct, st, rsn, pl, dup, ack, oc)`,
        [
          rows.map((r) => r.rec.id),
          rows.map((r) => r.rec.channel),
          rows.map((r) => r.rec.sender),
          rows.map((r) => r.rec.controlId),
          rows.map((r) => r.rec.contentHash),
          rows.map((r) => r.rec.contentType),
          receivedAt,
          rows.map((r) => r.status),
          rows.map((r) => r.rec.reason),
          rows.map((r) => r.payload),
          rows.map((r) => r.rec.duplicateOf),
          rows.map((r) => r.ack),
          rows.map((r) => (r.outcome === null || r.outcome === undefined ? null : JSON.stringify(r.outcome))),
          this.instance,
        ],
      );
      return results;
    });
  }

  /** Records the outcome of processing an entry (inside the caller's transaction when given). */
  async finish(
    id: string,
    result: { status: Exclude<InboxStatus, 'received' | 'processing'>; reason?: string; ack?: string; outcome?: unknown; produced?: string[]; patientKey?: string },
    tx: Queryable = this.db,
  ): Promise<void> {
    await tx.query(
      `UPDATE inbox SET status = $2, reason = $3, ack = COALESCE($4, ack), outcome = $5, produced = $6, patient_key = $7,
         processed_at = now(), lease_until = NULL WHERE id = $1`,
      [
        id,
        result.status,
        result.reason ?? null,
        result.ack ?? null,
        result.outcome === undefined ? null : JSON.stringify(result.outcome),
        JSON.stringify(result.produced ?? []),
        result.patientKey ?? null,
      ],
    );
  }

  /** Records the outcomes of several entries in one statement (a batch of HL7 messages). */
  async finishMany(
    results: { id: string; status: Exclude<InboxStatus, 'received' | 'processing'>; reason?: string; outcome?: unknown; produced?: string[]; patientKey?: string }[],
    tx: Queryable = this.db,
  ): Promise<void> {
    if (results.length === 0) return;
    await tx.query(
      `UPDATE inbox SET status = u.st, reason = u.rsn, outcome = u.oc, produced = u.pr, patient_key = u.pk,
         processed_at = now(), lease_until = NULL
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(id, st, rsn, oc, pr, pk)
       WHERE inbox.id = u.id`,
      [
        results.map((r) => r.id),
        results.map((r) => r.status),
        results.map((r) => r.reason ?? null),
        results.map((r) => (r.outcome === undefined ? null : JSON.stringify(r.outcome))),
        results.map((r) => JSON.stringify(r.produced ?? [])),
        results.map((r) => r.patientKey ?? null),
      ],
    );
  }

  /** Saves the ACKs sent for entries (one statement for all), so a retransmission gets the same answer. */
  async saveAcks(acks: { id: string; ack: string }[]): Promise<void> {
    if (acks.length === 0) return;
    await this.db.query(`UPDATE inbox SET ack = u.ack FROM unnest($1::text[], $2::text[]) AS u(id, ack) WHERE inbox.id = u.id`, [
      acks.map((a) => a.id),
      acks.map((a) => a.ack),
    ]);
  }

  /**
   * receiveMany on PostgreSQL: one call of `inbox_receive` (schema migration 7) locks the retransmission keys, looks
   * up earlier entries and inserts, in one round trip instead of five; the earlier entries of retransmissions (rare)
   * are read in one more.
   */
  private async receiveInOneStatement(
    prepared: Prepared[],
    receivedAt: string,
  ): Promise<ReceiveResult[]> {
    const rows = await this.db.query<{ n: number; duplicate: ReceiveResult['duplicate']; original_id: string | null }>(
      `SELECT n, duplicate, original_id FROM inbox_receive($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
         $7::timestamptz, $8::text[], $9::text[], $10::bytea[], $11::text[], $12::text[], $13::boolean[], $14::integer, $15::text)`,
      [
        prepared.map((p) => p.id),
        prepared.map((p) => p.input.channel),
        prepared.map((p) => p.sender),
        prepared.map((p) => p.controlId),
        prepared.map((p) => p.contentHash),
        prepared.map((p) => p.input.contentType ?? null),
        receivedAt,
        prepared.map(initialStatus),
        prepared.map((p) => p.input.rejectReason ?? null),
        prepared.map((p) => p.input.payload),
        prepared.map((p) => p.input.ack ?? null),
        prepared.map((p) => (p.input.rejectReason && p.input.outcome !== undefined ? JSON.stringify(p.input.outcome) : null)),
        prepared.map((p) => !!p.input.dedupe),
        LEASE_SECONDS,
        this.instance,
      ],
    );
    const byN = new Map(rows.map((r) => [Number(r.n), r]));
    const originalIds = [...new Set(rows.map((r) => r.original_id).filter((x): x is string => !!x))];
    const originals = new Map(
      originalIds.length
        ? (await this.db.query(`SELECT ${COLUMNS} FROM inbox WHERE id = ANY($1::text[])`, [originalIds])).map((r) => [String(r.id), toEntry(r)])
        : [],
    );
    return prepared.map((p, i) => {
      const r = byN.get(i + 1);
      if (!r) throw new Error(`inbox_receive returned no row for input ${i + 1}`);
      const original = r.original_id ? originals.get(r.original_id) : undefined;
      if (r.duplicate === 'same') {
        if (!original) throw new Error(`inbox entry ${r.original_id} vanished while a retransmission of it was received`);
        return { entry: original, duplicate: 'same', original };
      }
      const entry =
        r.duplicate === 'different'
          ? newEntry(p, receivedAt, 'rejected', duplicateReason(p, r.original_id), r.original_id, this.instance)
          : newEntry(p, receivedAt, initialStatus(p), p.input.rejectReason ?? null, null, this.instance);
      return { entry, duplicate: r.duplicate, original };
    });
  }

  /** The person an entry's processing was about (null until processed, or when it named nobody). */
  async patientOf(id: string): Promise<string | null> {
    const rows = await this.db.query<{ patient_key: string | null }>(`SELECT patient_key FROM inbox WHERE id = $1`, [id]);
    return rows[0]?.patient_key ?? null;
  }

  async get(id: string): Promise<(InboxEntry & { payload: Buffer }) | undefined> {
    const rows = await this.db.query(`SELECT ${COLUMNS}, payload FROM inbox WHERE id = $1`, [id]);
    if (rows.length === 0) return undefined;
    return { ...toEntry(rows[0]), payload: Buffer.from(rows[0].payload as Uint8Array) };
  }

  /** Newest first; no payloads (no patient data in lists). */
  async list(opts: { status?: InboxStatus; channel?: string; limit?: number; before?: string } = {}): Promise<InboxEntry[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (opts.status) where.push(`status = $${params.push(opts.status)}`);
    if (opts.channel) where.push(`channel = $${params.push(opts.channel)}`);
    if (opts.before) where.push(`received_at < $${params.push(opts.before)}`);
    const limit = Math.min(Math.max(opts.limit ?? 50, 1), 500);
    const rows = await this.db.query(
      `SELECT ${COLUMNS} FROM inbox ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY received_at DESC, id LIMIT ${limit}`,
      params,
    );
    return rows.map(toEntry);
  }

  /**
   * Claims the oldest entry waiting to be processed: received, or processing with an expired lease or a claimer that
   * is gone. Row-level `FOR UPDATE SKIP LOCKED`: concurrent claimers on other instances skip it.
   */
  async claim(): Promise<(InboxEntry & { payload: Buffer }) | undefined> {
    const rows = await this.db.transaction((tx) =>
      tx.query(
        `UPDATE inbox SET status = 'processing', attempts = attempts + 1, claimed_by = $1,
           lease_until = now() + make_interval(secs => ${LEASE_SECONDS})
         WHERE id = (
           SELECT id FROM inbox
           WHERE status = 'received' OR (status = 'processing' AND (lease_until < now() OR ${claimedByTheGone('$1')}))
           ORDER BY received_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING ${COLUMNS}, payload`,
        [this.instance],
      ),
    );
    if (rows.length === 0) return undefined;
    return { ...toEntry(rows[0]), payload: Buffer.from(rows[0].payload as Uint8Array) };
  }

  /** Claims one entry by id for processing now, unless another instance that is alive holds a live lease on it. */
  async claimById(id: string): Promise<(InboxEntry & { payload: Buffer }) | undefined> {
    const rows = await this.db.query(
      `UPDATE inbox SET status = 'processing', attempts = attempts + 1, claimed_by = $2,
         lease_until = now() + make_interval(secs => ${LEASE_SECONDS})
       WHERE id = $1 AND NOT (status = 'processing' AND lease_until >= now() AND NOT ${claimedByTheGone('$2')})
       RETURNING ${COLUMNS}, payload`,
      [id, this.instance],
    );
    if (rows.length === 0) return undefined;
    return { ...toEntry(rows[0]), payload: Buffer.from(rows[0].payload as Uint8Array) };
  }

  /** Marks an entry for processing again (admin reprocess). */
  async requeue(id: string): Promise<boolean> {
    const rows = await this.db.query(`UPDATE inbox SET status = 'received', lease_until = NULL, claimed_by = NULL WHERE id = $1 RETURNING id`, [id]);
    return rows.length > 0;
  }

  /**
   * Embedded mode start-up: re-inserts journal rows PGlite lost, and returns entries left in 'processing' by a
   * dead process to 'received' (one process owns a PGlite directory, so no lease needs to run out).
   */
  async recoverEmbedded(records: JournalRecord[]): Promise<number> {
    let restored = 0;
    for (const rec of records) {
      const rows = await this.db.query(
        `INSERT INTO inbox (id, channel, sender, control_id, content_hash, content_type, received_at, status, reason, payload, duplicate_of)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING RETURNING id`,
        [rec.id, rec.channel, rec.sender, rec.controlId, rec.contentHash, rec.contentType, rec.receivedAt, rec.status, rec.reason, Buffer.from(rec.payload, 'base64'), rec.duplicateOf],
      );
      restored += rows.length;
    }
    await this.db.query(`UPDATE inbox SET status = 'received', lease_until = NULL, claimed_by = NULL WHERE status = 'processing'`);
    return restored;
  }

  async counts(): Promise<Record<string, number>> {
    const rows = await this.db.query<{ status: string; n: string | number }>(`SELECT status, count(*) AS n FROM inbox GROUP BY status`);
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }
}
