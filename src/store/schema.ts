/**
 * One SQL schema and its migrations, the same for PGlite and PostgreSQL.
 *
 * Layout (why):
 * - `resource` holds the current version of every resource as its JSON text (served without re-serialising);
 *   `resource_version` holds every version ever written (FHIR history; nothing is overwritten).
 * - Search never scans JSON: index tables (`idx_token`, `idx_string`, `idx_reference`, `idx_date`,
 *   `idx_quantity`) are filled in the same transaction as the write, one row per search-parameter value.
 * - `patient_key` (the Patient compartment the row belongs to) is on every patient-owned row, so the tables
 *   can later be distributed by patient (e.g. Citus) without a schema change.
 * - `inbox` keeps every inbound payload raw, before anything is acknowledged.
 * - `seq` is an immutable creation order: search pages are keyset cursors on it, stable under concurrent writes.
 *   Every index row carries its resource's (`resource_seq`): the rows of one resource are found by it (schema
 *   migration 5), and a page of the resources referring to one target is an ordered range of the reference index.
 */
import type { Queryable } from './db.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
  /** runs after `sql`, in the same transaction: a step SQL alone cannot do (recomputing index rows) */
  run?: (tx: Queryable) => Promise<unknown>;
}

/**
 * `inbox_receive` (schema migrations 7 and 8): what InboxStore.receiveMany did in five round trips (BEGIN, lock the
 * retransmission keys, look up earlier entries, insert, COMMIT) in one call: each statement of a plpgsql function
 * takes a fresh snapshot, so the lookup after the locks sees every entry committed before them, as it did in the
 * explicit transaction. Per input, in order: 'same' (an earlier entry with this sender, control id and content:
 * nothing stored), 'different' (same key, other content: stored rejected, duplicate_of the earlier one) or 'none'
 * (stored). An input of the batch is an earlier entry for the later ones. The ACK and the outcome are kept only with
 * 'none'. With `claimer` (migration 8) an entry stored as claimed records the instance that claimed it.
 */
function inboxReceive(claimer: boolean): string {
  return `CREATE OR REPLACE FUNCTION inbox_receive(
          p_id text[], p_channel text[], p_sender text[], p_control text[], p_hash text[], p_ctype text[], p_received timestamptz,
          p_status text[], p_reason text[], p_payload bytea[], p_ack text[], p_outcome text[], p_dedupe boolean[], p_lease_seconds integer${claimer ? ', p_claimer text' : ''})
        RETURNS TABLE (n integer, duplicate text, original_id text)
        LANGUAGE plpgsql AS $fn$
        DECLARE
          i integer;
          prior_id text;
          prior_hash text;
          st text;
          rsn text;
          dup_of text;
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (
            SELECT DISTINCT 'inbox|' || s || '|' || c AS k FROM unnest(p_sender, p_control, p_dedupe) AS u(s, c, d)
            WHERE d AND s IS NOT NULL AND c IS NOT NULL ORDER BY 1) AS keys;
          FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
            st := p_status[i];
            rsn := p_reason[i];
            dup_of := NULL;
            IF p_dedupe[i] AND p_sender[i] IS NOT NULL AND p_control[i] IS NOT NULL THEN
              SELECT e.id, e.content_hash INTO prior_id, prior_hash FROM inbox e
                WHERE e.sender = p_sender[i] AND e.control_id = p_control[i] AND e.duplicate_of IS NULL
                ORDER BY e.received_at, e.id LIMIT 1;
              IF prior_id IS NOT NULL THEN
                IF prior_hash = p_hash[i] THEN
                  n := i; duplicate := 'same'; original_id := prior_id;
                  RETURN NEXT;
                  CONTINUE;
                END IF;
                st := 'rejected';
                dup_of := prior_id;
                rsn := format('duplicate control id %s from %s with different content (first received as %s)', p_control[i], p_sender[i], prior_id);
              END IF;
            END IF;
            INSERT INTO inbox (id, channel, sender, control_id, content_hash, content_type, received_at, status, reason,
                payload, duplicate_of, attempts, lease_until, processed_at, ack, outcome${claimer ? ', claimed_by' : ''})
              VALUES (p_id[i], p_channel[i], p_sender[i], p_control[i], p_hash[i], p_ctype[i], p_received, st, rsn,
                p_payload[i], dup_of, CASE WHEN st = 'processing' THEN 1 ELSE 0 END,
                CASE WHEN st = 'processing' THEN now() + make_interval(secs => p_lease_seconds) END,
                CASE WHEN st = 'rejected' THEN now() END,
                CASE WHEN dup_of IS NULL THEN p_ack[i] END,
                CASE WHEN dup_of IS NULL AND p_reason[i] IS NOT NULL THEN p_outcome[i] END${claimer ? `,
                CASE WHEN st = 'processing' THEN p_claimer END` : ''});
            n := i; duplicate := CASE WHEN dup_of IS NULL THEN 'none' ELSE 'different' END; original_id := dup_of;
            RETURN NEXT;
          END LOOP;
        END
        $fn$`;
}

/** The identifier columns schema migration 9 makes compare byte by byte, by table. */
export const BYTEWISE_COLUMNS: [string, string[]][] = [
  ['resource', ['resource_type', 'id', 'patient_key']],
  ['resource_version', ['resource_type', 'id', 'patient_key']],
  ['idx_token', ['resource_type', 'resource_id', 'param', 'patient_key', 'system', 'code']],
  ['idx_string', ['resource_type', 'resource_id', 'param', 'patient_key', 'value', 'exact']],
  ['idx_reference', ['resource_type', 'resource_id', 'param', 'patient_key', 'target_type', 'target_id']],
  ['idx_date', ['resource_type', 'resource_id', 'param', 'patient_key']],
  ['idx_quantity', ['resource_type', 'resource_id', 'param', 'patient_key', 'system', 'code']],
];

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'resources, versions, search indexes, inbox',
    sql: `
CREATE SEQUENCE resource_seq;
CREATE TABLE resource (
  resource_type text NOT NULL,
  id text NOT NULL,
  version_id integer NOT NULL,
  last_updated timestamptz NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  patient_key text,
  seq bigint NOT NULL DEFAULT nextval('resource_seq'),
  content text NOT NULL,
  PRIMARY KEY (resource_type, id)
);
CREATE INDEX resource_type_seq ON resource (resource_type, seq);
CREATE INDEX resource_type_updated ON resource (resource_type, last_updated);
CREATE INDEX resource_patient ON resource (patient_key);

CREATE TABLE resource_version (
  resource_type text NOT NULL,
  id text NOT NULL,
  version_id integer NOT NULL,
  last_updated timestamptz NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  patient_key text,
  content text,
  PRIMARY KEY (resource_type, id, version_id)
);
CREATE INDEX resource_version_type_updated ON resource_version (resource_type, last_updated);

CREATE TABLE idx_token (
  resource_type text NOT NULL, resource_id text NOT NULL, param text NOT NULL,
  system text, code text, patient_key text
);
CREATE INDEX idx_token_lookup ON idx_token (resource_type, param, code, system);
CREATE INDEX idx_token_owner ON idx_token (resource_type, resource_id);

CREATE TABLE idx_string (
  resource_type text NOT NULL, resource_id text NOT NULL, param text NOT NULL,
  value text NOT NULL, patient_key text
);
CREATE INDEX idx_string_lookup ON idx_string (resource_type, param, value text_pattern_ops);
CREATE INDEX idx_string_owner ON idx_string (resource_type, resource_id);

CREATE TABLE idx_reference (
  resource_type text NOT NULL, resource_id text NOT NULL, param text NOT NULL,
  target_type text NOT NULL, target_id text NOT NULL, patient_key text
);
CREATE INDEX idx_reference_lookup ON idx_reference (resource_type, param, target_id, target_type);
CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);
CREATE INDEX idx_reference_owner ON idx_reference (resource_type, resource_id);

CREATE TABLE idx_date (
  resource_type text NOT NULL, resource_id text NOT NULL, param text NOT NULL,
  low timestamptz NOT NULL, high timestamptz NOT NULL, patient_key text
);
CREATE INDEX idx_date_lookup ON idx_date (resource_type, param, low, high);
CREATE INDEX idx_date_owner ON idx_date (resource_type, resource_id);

CREATE TABLE idx_quantity (
  resource_type text NOT NULL, resource_id text NOT NULL, param text NOT NULL,
  value numeric NOT NULL, system text, code text, patient_key text
);
CREATE INDEX idx_quantity_lookup ON idx_quantity (resource_type, param, value);
CREATE INDEX idx_quantity_owner ON idx_quantity (resource_type, resource_id);

CREATE TABLE inbox (
  id text PRIMARY KEY,
  channel text NOT NULL,
  sender text,
  control_id text,
  content_hash text NOT NULL,
  content_type text,
  received_at timestamptz NOT NULL,
  status text NOT NULL CHECK (status IN ('received', 'processing', 'processed', 'rejected', 'failed')),
  reason text,
  payload bytea NOT NULL,
  ack text,
  outcome text,
  produced text,
  attempts integer NOT NULL DEFAULT 0,
  lease_until timestamptz,
  processed_at timestamptz,
  duplicate_of text,
  patient_key text
);
CREATE INDEX inbox_status ON inbox (status, received_at);
CREATE INDEX inbox_sender_control ON inbox (sender, control_id);
`,
  },
  {
    version: 2,
    name: 'audit hash chain',
    sql: `
CREATE TABLE audit_chain (
  seq bigserial PRIMARY KEY,
  event_id text NOT NULL UNIQUE,
  prev text NOT NULL,
  hash text NOT NULL
);
`,
  },
  {
    version: 3,
    name: 'reference index rows carry the referring resource\'s seq (pages in creation order straight from the index)',
    // A search anchored on one reference (`CareTeam?participant=Organization/…`) walks the index of that target in
    // seq order and stops after a page, instead of testing resources of the type one by one or sorting every
    // match. Identical rows of one resource (two participants naming the same Organization) are merged, so each
    // resource appears once in that walk; the indexer no longer writes them.
    sql: `
DELETE FROM idx_reference a USING idx_reference b
  WHERE a.ctid > b.ctid AND a.resource_type = b.resource_type AND a.resource_id = b.resource_id
    AND a.param = b.param AND a.target_type = b.target_type AND a.target_id = b.target_id;
ALTER TABLE idx_reference ADD COLUMN resource_seq bigint;
UPDATE idx_reference x SET resource_seq = r.seq FROM resource r WHERE r.resource_type = x.resource_type AND r.id = x.resource_id;
CREATE INDEX idx_reference_target_seq ON idx_reference (resource_type, param, target_type, target_id, resource_seq) INCLUDE (resource_id);
`,
  },
  {
    version: 4,
    name: 'one string row per value (the value as written in `exact`), parameters with the same values share rows, two reference indexes fewer',
    // Every index row costs a B-tree insert per index at write time, most of the database's work when a message
    // is stored. String values were written twice (normalised, and `{param}:exact` as written); now one row holds
    // both (`exact` NULL when equal). `phonetic` had rows identical to `name` (same expression): now read from
    // `name`'s; `patient` (`X.subject.where(resolve() is Patient)`) copied `subject` rows: now read from those
    // pointing at a Patient (searchparams.ts `indexedAs`; the copies are deleted by `run`). `idx_reference_lookup` (…, target_id, target_type) duplicated `idx_reference_target_seq`
    // (…, target_type, target_id, …): a search on a plain id probes each target type of the parameter instead.
    // `idx_reference_target` (target_type, target_id) served only `_revinclude=*` and a merge's "who refers to the
    // retired patient": both now probe `idx_reference_target_seq` once per reference parameter.
    sql: `
ALTER TABLE idx_string ADD COLUMN exact text;
DROP INDEX idx_reference_lookup;
DROP INDEX idx_reference_target;
`,
    run: async (tx) => (await import('./reindex.js')).rebuildStringIndex(tx),
  },
  {
    version: 5,
    name: 'index rows find their resource by its seq (owner indexes append-only)',
    // The owner indexes (resource_type, resource_id) served "the rows of this resource" (updates, deletes, probes
    // from a resource, sort keys, _include). Their keys were UUID text, so every new row went to a random leaf: at
    // 100,000 imported rows those inserts were a quarter of the database's work, dropping them entirely made the
    // database ~25 % faster. Keyed by the resource's seq (one sequence for all types, kept by updates) a new
    // resource's rows go to the right-hand end of a bigint index. Rows whose resource does not exist are dropped.
    // The updated tables are then rewritten in seq order (CLUSTER), as a new store's are, and analysed. Left as the
    // UPDATE leaves them (half dead rows, seq order lost) the planner costs a probe of the owner index so high that
    // a prepared statement's generic plan ANDed it with the value index and read every `status=active` entry for
    // each resource of a page walk: 7 municipality pages/s on a migrated million-resource store instead of ~570.
    sql: `
ALTER TABLE idx_token ADD COLUMN resource_seq bigint;
ALTER TABLE idx_string ADD COLUMN resource_seq bigint;
ALTER TABLE idx_date ADD COLUMN resource_seq bigint;
ALTER TABLE idx_quantity ADD COLUMN resource_seq bigint;
DROP INDEX idx_token_owner;
DROP INDEX idx_string_owner;
DROP INDEX idx_date_owner;
DROP INDEX idx_quantity_owner;
DROP INDEX idx_reference_owner;
UPDATE idx_token x SET resource_seq = r.seq FROM resource r WHERE r.resource_type = x.resource_type AND r.id = x.resource_id;
UPDATE idx_string x SET resource_seq = r.seq FROM resource r WHERE r.resource_type = x.resource_type AND r.id = x.resource_id;
UPDATE idx_date x SET resource_seq = r.seq FROM resource r WHERE r.resource_type = x.resource_type AND r.id = x.resource_id;
UPDATE idx_quantity x SET resource_seq = r.seq FROM resource r WHERE r.resource_type = x.resource_type AND r.id = x.resource_id;
DELETE FROM idx_token WHERE resource_seq IS NULL;
DELETE FROM idx_string WHERE resource_seq IS NULL;
DELETE FROM idx_date WHERE resource_seq IS NULL;
DELETE FROM idx_quantity WHERE resource_seq IS NULL;
DELETE FROM idx_reference WHERE resource_seq IS NULL;
CREATE INDEX idx_token_owner ON idx_token (resource_seq);
CREATE INDEX idx_string_owner ON idx_string (resource_seq);
CREATE INDEX idx_date_owner ON idx_date (resource_seq);
CREATE INDEX idx_quantity_owner ON idx_quantity (resource_seq);
CREATE INDEX idx_reference_owner ON idx_reference (resource_seq);
CLUSTER idx_token USING idx_token_owner;
CLUSTER idx_string USING idx_string_owner;
CLUSTER idx_date USING idx_date_owner;
CLUSTER idx_quantity USING idx_quantity_owner;
ANALYZE idx_token;
ANALYZE idx_string;
ANALYZE idx_date;
ANALYZE idx_quantity;
ANALYZE idx_reference;
`,
  },
  {
    version: 6,
    name: 'resource texts and raw payloads compressed with lz4 where the server has it',
    // Texts over ~2 KB (a Provenance naming 20 targets, a grown CareTeam or CarePlan, a raw HL7 message) are
    // compressed when stored; pglz was ~4 % of the database's work at ingest, lz4 compresses and reads back
    // several times faster. Only new values are written with it (old ones stay readable as they are); a server
    // built without lz4 (the embedded store) keeps pglz.
    sql: '',
    run: async (tx) => {
      const rows = await tx.query<{ lz4: boolean }>(`SELECT 'lz4' = ANY(enumvals) AS lz4 FROM pg_settings WHERE name = 'default_toast_compression'`);
      if (!rows[0]?.lz4) return;
      await tx.query(`ALTER TABLE resource ALTER COLUMN content SET COMPRESSION lz4`);
      await tx.query(`ALTER TABLE resource_version ALTER COLUMN content SET COMPRESSION lz4`);
      await tx.query(`ALTER TABLE inbox ALTER COLUMN payload SET COMPRESSION lz4`);
    },
  },
  {
    version: 7,
    name: 'inbox_receive: a batch of received payloads stored in one statement',
    // see inboxReceive above
    sql: '',
    run: async (tx) => {
      await tx.query(inboxReceive(false));
    },
  },
  {
    version: 8,
    name: 'inbox entries name the instance that claimed them: the claims of an instance that is gone are taken over at once',
    // Until now an entry left in `processing` by a dead instance waited for its lease (120 s) to run out. Each
    // instance now holds a session advisory lock on its id for as long as it lives (db.ts `holdLock`); PostgreSQL
    // drops it when the instance's connection dies, so a claimer whose lock can be taken is gone (inbox.ts).
    sql: `ALTER TABLE inbox ADD COLUMN claimed_by text`,
    run: async (tx) => {
      await tx.query(`DROP FUNCTION inbox_receive(text[], text[], text[], text[], text[], text[], timestamptz, text[], text[], bytea[], text[], text[], boolean[], integer)`);
      await tx.query(inboxReceive(true));
    },
  },
  {
    version: 9,
    name: 'identifier columns of the resource and index tables compare byte by byte (COLLATE "C")',
    // Types, ids, parameter names, systems, codes, references and the strings search matches are identifiers, not
    // prose: ordering them by a language's rules means nothing (sorting already asks for COLLATE "C"), and it costs every
    // B-tree comparison a trip through the locale (strcoll) wherever the database's collation is not C. Measured on
    // 20,000-row imports (database collation C.UTF-8, four pairs): PostgreSQL's CPU 0.44–0.49 against 0.49–0.57 ms a
    // row. The indexes are rebuilt; the tables are not rewritten.
    sql: BYTEWISE_COLUMNS.map(([table, cols]) => `ALTER TABLE ${table} ${cols.map((c) => `ALTER COLUMN ${c} TYPE text COLLATE "C"`).join(', ')};\n`).join(''),
  },
  {
    version: 10,
    name: 'index values longer than 512 bytes are capped (a long name, identifier or URL no longer fails the write)',
    // A B-tree entry must fit in a third of a page (2,704 bytes): a resource with a 3,000-character name, identifier
    // or URL failed its write with "index row size exceeds btree maximum" (500). The indexer now caps every string,
    // token and uri value at 512 bytes (indexer.ts indexPrefix, indexKey; search caps search values the same way).
    // Rows written before may hold longer values (below the limit, or past it where the entry compressed well);
    // they are capped here too, so the rows of a resource stay exactly what `indexRows` gives (reindex.ts). Only
    // such rows are touched; finding them reads idx_string and idx_token once.
    sql: '',
    run: async (tx) => (await import('./reindex.js')).capLongIndexValues(tx),
  },
  {
    version: 11,
    name: 'audit chain head (length, last hash, and a MAC under a key the database does not hold); the cursor-sealing secret',
    // Deleting the newest events and their chain rows left a shorter chain that still verified; the head records how
    // long the chain is. With AUDIT_KEY_FILE the head carries an HMAC of (length, hash), so rewriting the chain and
    // recomputing every hash is detected too: whoever holds only the database cannot sign the new head.
    sql: `
CREATE TABLE audit_head (
  id integer PRIMARY KEY CHECK (id = 1),
  length bigint NOT NULL,
  hash text NOT NULL,
  mac text
);
INSERT INTO audit_head (id, length, hash)
  SELECT 1, count(*), coalesce((SELECT hash FROM audit_chain ORDER BY seq DESC LIMIT 1), repeat('0', 64)) FROM audit_chain;
-- a secret every instance shares, made once: it seals the paging cursors a guarded search hands out
CREATE TABLE server_secret (name text PRIMARY KEY, value bytea NOT NULL);
INSERT INTO server_secret (name, value) VALUES ('cursor', decode(md5(random()::text || clock_timestamp()::text) || md5(random()::text || clock_timestamp()::text), 'hex'));
`,
  },
];

/**
 * Brings the schema up to date. Concurrent starters (several instances on one PostgreSQL) serialise on an
 * advisory lock, so each migration runs exactly once.
 */
export async function migrate(db: { transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> }): Promise<number[]> {
  return db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(727274)`);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set((await tx.query<{ version: number }>(`SELECT version FROM schema_migrations`)).map((r) => Number(r.version)));
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      for (const stmt of m.sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) await tx.query(stmt);
      if (m.run) await m.run(tx);
      await tx.query(`INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
      applied.push(m.version);
    }
    return applied;
  });
}
