/**
 * The inbox: every inbound payload (HL7 v2, FHIR, social-care file) stored raw, with sender, time, status and
 * reason, in a committed transaction before anything is acknowledged.
 *
 * Status: received → processing → processed | rejected | failed. Work is claimed row by row with
 * `FOR UPDATE SKIP LOCKED` and a lease, so several gateway instances on one PostgreSQL never process the same
 * entry twice, and an entry whose instance died is picked up again when its lease runs out.
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
}

export interface ReceiveResult {
  entry: InboxEntry;
  /** 'same': an earlier entry had this sender, control id and content; 'different': same id, other content */
  duplicate: 'none' | 'same' | 'different';
  original?: InboxEntry;
}

const LEASE_SECONDS = 120;

const COLUMNS = `id, channel, sender, control_id, content_hash, content_type, received_at, status, reason, ack, outcome,
  produced, attempts, processed_at, duplicate_of`;

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
  };
}

export function sha256(buf: Buffer): string {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

export class Inbox {
  constructor(
    private readonly db: Db,
    private readonly journal?: Journal,
    /** called after each journal append (the store checkpoints when the journal grows large) */
    private readonly afterJournalAppend?: () => void,
  ) {}

  /**
   * Stores a payload durably. When this resolves the row is committed (and, in embedded mode, fsync'd to the
   * journal), so the caller may acknowledge.
   */
  async receive(input: InboxInput): Promise<ReceiveResult> {
    const id = crypto.randomUUID();
    const contentHash = sha256(input.payload);
    const receivedAt = new Date().toISOString();
    const sender = input.sender ?? null;
    const controlId = input.controlId ?? null;

    return this.db.transaction(async (tx) => {
      let duplicate: ReceiveResult['duplicate'] = 'none';
      let original: InboxEntry | undefined;
      if (input.dedupe && sender && controlId) {
        await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`inbox|${sender}|${controlId}`]);
        const rows = await tx.query(
          `SELECT ${COLUMNS} FROM inbox WHERE sender = $1 AND control_id = $2 AND duplicate_of IS NULL ORDER BY received_at LIMIT 1`,
          [sender, controlId],
        );
        if (rows.length > 0) {
          original = toEntry(rows[0]);
          duplicate = original.contentHash === contentHash ? 'same' : 'different';
        }
      }
      if (duplicate === 'same' && original) return { entry: original, duplicate, original };

      let status: InboxStatus = input.claim === false ? 'received' : 'processing';
      let reason: string | null = null;
      if (input.rejectReason) {
        status = 'rejected';
        reason = input.rejectReason;
      }
      if (duplicate === 'different') {
        status = 'rejected';
        reason = `duplicate control id ${controlId} from ${sender} with different content (first received as ${original?.id})`;
      }
      const rec: JournalRecord = {
        id,
        channel: input.channel,
        sender,
        controlId,
        contentHash,
        contentType: input.contentType ?? null,
        receivedAt,
        status: status === 'processing' ? 'received' : status,
        reason,
        duplicateOf: duplicate === 'different' ? (original?.id ?? null) : null,
        payload: input.payload.toString('base64'),
      };
      // Journal first: once it is on disk the payload survives anything; the row below is its index.
      if (this.journal) {
        await this.journal.append(rec);
        this.afterJournalAppend?.();
      }
      const rows = await tx.query(
        `INSERT INTO inbox (id, channel, sender, control_id, content_hash, content_type, received_at, status, reason,
           payload, duplicate_of, attempts, lease_until, processed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
           CASE WHEN $8 = 'processing' THEN now() + make_interval(secs => ${LEASE_SECONDS}) END,
           CASE WHEN $8 = 'rejected' THEN now() END)
         RETURNING ${COLUMNS}`,
        [id, input.channel, sender, controlId, contentHash, rec.contentType, receivedAt, status, reason, input.payload, rec.duplicateOf, status === 'processing' ? 1 : 0],
      );
      return { entry: toEntry(rows[0]), duplicate, original };
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

  /** Saves the ACK sent for an entry, so a retransmission gets the same answer. */
  async saveAck(id: string, ack: string): Promise<void> {
    await this.db.query(`UPDATE inbox SET ack = $2 WHERE id = $1`, [id, ack]);
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
   * Claims the oldest entry waiting to be processed (received, or processing with an expired lease).
   * Row-level `FOR UPDATE SKIP LOCKED`: concurrent claimers on other instances skip it.
   */
  async claim(): Promise<(InboxEntry & { payload: Buffer }) | undefined> {
    const rows = await this.db.transaction((tx) =>
      tx.query(
        `UPDATE inbox SET status = 'processing', attempts = attempts + 1,
           lease_until = now() + make_interval(secs => ${LEASE_SECONDS})
         WHERE id = (
           SELECT id FROM inbox
           WHERE status = 'received' OR (status = 'processing' AND lease_until < now())
           ORDER BY received_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING ${COLUMNS}, payload`,
      ),
    );
    if (rows.length === 0) return undefined;
    return { ...toEntry(rows[0]), payload: Buffer.from(rows[0].payload as Uint8Array) };
  }

  /** Claims one entry by id for processing now, unless another instance holds a live lease on it. */
  async claimById(id: string): Promise<(InboxEntry & { payload: Buffer }) | undefined> {
    const rows = await this.db.query(
      `UPDATE inbox SET status = 'processing', attempts = attempts + 1, lease_until = now() + make_interval(secs => ${LEASE_SECONDS})
       WHERE id = $1 AND NOT (status = 'processing' AND lease_until >= now())
       RETURNING ${COLUMNS}, payload`,
      [id],
    );
    if (rows.length === 0) return undefined;
    return { ...toEntry(rows[0]), payload: Buffer.from(rows[0].payload as Uint8Array) };
  }

  /** Marks an entry for processing again (admin reprocess). */
  async requeue(id: string): Promise<boolean> {
    const rows = await this.db.query(`UPDATE inbox SET status = 'received', lease_until = NULL WHERE id = $1 RETURNING id`, [id]);
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
    await this.db.query(`UPDATE inbox SET status = 'received', lease_until = NULL WHERE status = 'processing'`);
    return restored;
  }

  async counts(): Promise<Record<string, number>> {
    const rows = await this.db.query<{ status: string; n: string | number }>(`SELECT status, count(*) AS n FROM inbox GROUP BY status`);
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }
}
