/**
 * An fsync'd append-only journal for the inbox in embedded mode.
 *
 * PGlite never calls fsync: its commits survive a killed process (the OS still has the pages) but not a power
 * loss. The inbox promise — "what was acknowledged is stored" — must hold across a power loss too, so in
 * embedded mode every inbox row is first appended here and fdatasync'd, then inserted into PGlite. On start
 * the journal is replayed (rows PGlite lost are inserted again); after a checkpoint that has fsync'd PGlite's
 * files the journal is truncated.
 *
 * Appends that arrive while a flush is running are written together by the next flush (group commit), so
 * one fdatasync serves many messages under load.
 */
import fs from 'node:fs';
import { promisify } from 'node:util';

const write = promisify(fs.write);
const fdatasync = promisify(fs.fdatasync);
const ftruncate = promisify(fs.ftruncate);
const close = promisify(fs.close);

export interface JournalRecord {
  id: string;
  channel: string;
  sender: string | null;
  controlId: string | null;
  contentHash: string;
  contentType: string | null;
  receivedAt: string;
  status: string;
  reason: string | null;
  duplicateOf: string | null;
  payload: string; // base64
}

interface Pending {
  line: string;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class Journal {
  private fd: number | undefined;
  private pending: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private bytes = 0;

  constructor(readonly file: string) {}

  /**
   * Opened synchronously: right after the embedded database has opened, Node's thread pool answers late for a while
   * (0.25–0.4 s measured here, while V8 optimises the database's WebAssembly on every core), and an asynchronous
   * open waited for it — the gateway listened that much later.
   */
  async open(): Promise<void> {
    this.fd = fs.openSync(this.file, 'a');
    this.bytes = fs.fstatSync(this.fd).size;
  }

  get size(): number {
    return this.bytes;
  }

  /** Resolves once the record is on disk (written and fdatasync'd). */
  append(rec: JournalRecord): Promise<void> {
    const line = JSON.stringify(rec) + '\n';
    return new Promise((resolve, reject) => {
      this.pending.push({ line, resolve, reject });
      if (!this.flushing) this.flushing = this.flush();
    });
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending;
      this.pending = [];
      try {
        if (this.fd === undefined) throw new Error('journal is not open');
        const buf = Buffer.from(batch.map((p) => p.line).join(''), 'utf8');
        for (let at = 0; at < buf.length; ) at += (await write(this.fd, buf, at, buf.length - at)).bytesWritten;
        await fdatasync(this.fd);
        this.bytes += buf.length;
        for (const p of batch) p.resolve();
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    this.flushing = undefined;
  }

  /** Every complete record in the journal (retired file first); a torn last line (crash mid-write) is ignored. */
  static read(file: string): JournalRecord[] {
    const out: JournalRecord[] = [];
    for (const f of [Journal.retiredFile(file), file]) if (fs.existsSync(f)) out.push(...Journal.parse(fs.readFileSync(f, 'utf8')));
    return out;
  }

  private static parse(text: string): JournalRecord[] {
    const out: JournalRecord[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        out.push(JSON.parse(line) as JournalRecord);
      } catch {
        // torn write at the tail: the append never resolved, so nothing was acknowledged for it
      }
    }
    return out;
  }

  /** Empties the journal; call only after the database files have been made durable and nothing else writes. */
  async truncate(): Promise<void> {
    if (this.flushing) await this.flushing;
    if (this.fd === undefined) return;
    await ftruncate(this.fd, 0);
    await fdatasync(this.fd);
    this.bytes = 0;
    fs.rmSync(Journal.retiredFile(this.file), { force: true });
  }

  /**
   * Starts a new journal file; the records so far move to `<file>.old`, which `Journal.read` still replays.
   * After the database has been made durable, `dropRetired()` deletes it. Records appended meanwhile are
   * in the new file, so none is ever dropped before it is durable in the database.
   */
  async rotate(): Promise<void> {
    if (this.flushing) await this.flushing;
    await this.closeFile();
    fs.renameSync(this.file, Journal.retiredFile(this.file));
    await this.open();
  }

  dropRetired(): void {
    fs.rmSync(Journal.retiredFile(this.file), { force: true });
  }

  static retiredFile(file: string): string {
    return file + '.old';
  }

  async close(): Promise<void> {
    if (this.flushing) await this.flushing;
    await this.closeFile();
  }

  private async closeFile(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) await close(fd);
  }
}
