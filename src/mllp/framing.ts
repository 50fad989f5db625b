/**
 * MLLP framing: each message travels as `<VT> payload <FS><CR>` (0x0B … 0x1C 0x0D).
 *
 * `Deframer` turns a TCP byte stream into payloads: a frame may arrive split over many reads, several frames may
 * arrive in one read, and bytes outside a frame are skipped (and counted). Memory is bounded: a frame that grows
 * past the limit raises `too-large`.
 *
 * @see HL7 v2.5.1 Appendix C.4 (Minimal Lower Layer Protocol, release 2): block format
 */
import { OutcomeError } from '../fhir/outcome.js';

/** start block */
export const VT = 0x0b;
/** end block */
export const FS = 0x1c;
/** carriage return, second byte of the end */
export const CR = 0x0d;

const START = Buffer.from([VT]);
const END = Buffer.from([FS, CR]);

/** Wraps one payload in an MLLP frame (strings are sent as UTF-8; encode first for other charsets). */
export function frame(payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return Buffer.concat([START, body, END]);
}

/**
 * Accumulates bytes and yields complete frame payloads; keeps an incomplete frame for the next read.
 * A start byte inside an unfinished frame means that frame was cut short: it is discarded (counted as skipped)
 * and reading resynchronises on the new frame.
 */
export class Deframer {
  private parts: Buffer[] = [];
  private size = 0;
  private inFrame = false;
  /** bytes skipped outside any frame (or in discarded frames) since the caller last reset this counter */
  skipped = 0;
  /** set once a frame grew past the limit; from then on input is ignored (the caller answers AR and closes) */
  overflow: OutcomeError | undefined;

  /** @param max the largest payload accepted, in bytes */
  constructor(private readonly max: number) {}

  /**
   * Adds one read's bytes; returns the payloads completed by it, in order. When the current frame grows past
   * the limit, `overflow` is set (a `too-large` OutcomeError), the payloads completed before it are still
   * returned, and all further input is ignored.
   */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    if (this.overflow) return out;
    try {
      this.read(chunk, out);
    } catch (err) {
      if (!(err instanceof OutcomeError)) throw err;
      this.overflow = err;
    }
    return out;
  }

  private read(chunk: Buffer, out: Buffer[]): void {
    let pos = 0;
    while (pos < chunk.length) {
      if (!this.inFrame) {
        const start = chunk.indexOf(VT, pos);
        if (start < 0) {
          this.skipped += chunk.length - pos;
          return;
        }
        this.skipped += start - pos;
        pos = start + 1;
        this.begin();
        continue;
      }
      // the end block split across reads: FS was the last byte of the previous one
      if (chunk[pos] === CR && this.size > 0 && this.lastByte() === FS) {
        out.push(this.finish(this.size - 1));
        pos += 1;
        continue;
      }
      const end = chunk.indexOf(END, pos);
      const restart = chunk.indexOf(VT, pos);
      if (restart >= 0 && (end < 0 || restart < end)) {
        this.skipped += this.size + (restart - pos);
        pos = restart + 1;
        this.begin();
        continue;
      }
      if (end < 0) {
        this.append(chunk.subarray(pos));
        // +1: a trailing FS may still be followed by its CR in the next read
        if (this.size > this.max + 1) throw this.tooLarge();
        return;
      }
      this.append(chunk.subarray(pos, end));
      out.push(this.finish(this.size));
      pos = end + 2;
    }
  }

  private begin(): void {
    this.parts = [];
    this.size = 0;
    this.inFrame = true;
  }

  private append(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.size += b.length;
  }

  private lastByte(): number {
    const last = this.parts[this.parts.length - 1];
    return last[last.length - 1];
  }

  /** the current frame's first `length` bytes as one payload; the frame is closed */
  private finish(length: number): Buffer {
    if (length > this.max) throw this.tooLarge();
    const payload = Buffer.concat(this.parts, this.size).subarray(0, length);
    this.parts = [];
    this.size = 0;
    this.inFrame = false;
    return payload;
  }

  private tooLarge(): OutcomeError {
    return new OutcomeError('too-large', `message exceeds the limit of ${this.max} bytes`);
  }

  /** bytes of an unfinished frame (what is lost if the connection closes now) */
  get pending(): number {
    return this.inFrame ? this.size : 0;
  }

  /** the start of the unfinished frame (its MSH, to build an AR from) */
  get head(): Buffer {
    return this.inFrame ? Buffer.concat(this.parts, Math.min(this.size, 4096)) : Buffer.alloc(0);
  }
}
