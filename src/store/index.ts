/**
 * Opens the store: the database (PGlite in DATA_DIR, or PostgreSQL at DATABASE_URL), its migrations, the
 * inbox (with its fsync'd journal in embedded mode) and the FHIR repository.
 *
 * What each mode guarantees (also in README.md):
 * - PostgreSQL: every acknowledged write is committed with PostgreSQL's own durability (fsync on commit).
 * - PGlite: a committed write survives a killed process; the inbox additionally survives a power loss because
 *   every inbox row is fdatasync'd to `DATA_DIR/inbox.journal` before the acknowledgement and replayed on start.
 *   Resources derived from inbox entries can be rebuilt by reprocessing them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { openDb, fsyncTree, type Db, type OpenOptions } from './db.js';
import { migrate } from './schema.js';
import { Inbox } from './inbox.js';
import { Journal } from './journal.js';
import { Repository } from './repository.js';
import { type RepositoryOptions } from './writer.js';

export interface Store {
  db: Db;
  repo: Repository;
  inbox: Inbox;
  /** entries restored from the journal at start (embedded mode) */
  restored: number;
  /** makes PGlite's files durable and empties the journal (embedded mode; no-op on PostgreSQL) */
  checkpoint(): Promise<void>;
  close(): Promise<void>;
}

/** Journal size past which a checkpoint is taken, so replay at start stays short. */
const JOURNAL_CHECKPOINT_BYTES = 64 * 1024 * 1024;

export async function openStore(opts: OpenOptions & RepositoryOptions): Promise<Store> {
  const db = await openDb(opts);
  await migrate(db);
  let journal: Journal | undefined;
  let restored = 0;
  const embeddedDir = db.kind === 'pglite' && opts.dataDir && !opts.dataDir.startsWith('memory://') ? opts.dataDir : undefined;
  if (embeddedDir) {
    const file = path.join(embeddedDir, 'inbox.journal');
    const inboxForRecovery = new Inbox(db);
    restored = await inboxForRecovery.recoverEmbedded(Journal.read(file));
    journal = new Journal(file);
    await journal.open();
  }
  let checkpointing: Promise<void> | undefined;
  const checkpoint = async (): Promise<void> => {
    if (!embeddedDir || !journal) return;
    // PGlite runs one transaction at a time: every record in the retired file belongs to a transaction that
    // commits before this CHECKPOINT runs; later ones go to the new file.
    await journal.rotate();
    await db.query('CHECKPOINT');
    fsyncTree(path.join(embeddedDir, 'pgdata'));
    journal.dropRetired();
  };
  const inbox = new Inbox(db, journal, () => {
    if (journal && journal.size > JOURNAL_CHECKPOINT_BYTES && !checkpointing) {
      checkpointing = checkpoint().finally(() => (checkpointing = undefined));
    }
  });
  const repo = new Repository(db, { validate: opts.validate, checkUpdate: opts.checkUpdate });
  // while this lock is held, other instances leave this one's claimed inbox entries alone (inbox.ts)
  const letGo = await inbox.hold();

  let closing: Promise<void> | undefined;
  const close = async (): Promise<void> => {
    await letGo();
    if (checkpointing) await checkpointing;
    if (journal && embeddedDir) {
      // Close PGlite (it checkpoints and we fsync its files), then the journal is no longer needed.
      await db.close();
      await journal.truncate();
      await journal.close();
    } else {
      await db.close();
    }
  };
  const store: Store = {
    db,
    repo,
    inbox,
    restored,
    checkpoint,
    close: () => (closing ??= close()), // a second call waits for the first
  };

  return store;
}

export function dataDirExists(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'pgdata'));
}
