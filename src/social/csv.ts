/**
 * An incremental CSV reader (RFC 4180 plus what municipal exports do): any one-character delimiter, quoted fields
 * that contain the delimiter, line breaks or doubled quotes, CRLF / LF / CR line ends, a leading UTF-8 BOM.
 * Text is pushed in chunks of any size (a quoted field may span chunks); complete records come out as they end,
 * each with the physical line it started on, so a report can name the line a municipality sees in its editor.
 */
export interface CsvRecord {
  fields: string[];
  /** 1-based line number where the record starts */
  line: number;
}

export class CsvReader {
  private field = '';
  private fields: string[] = [];
  private quoted = false;
  /** inside quotes, a quote was seen: either the end of the quoted part or the first of a doubled quote */
  private quotePending = false;
  /** the previous chunk ended with CR: a LF at the start of the next chunk belongs to it */
  private afterCr = false;
  private crInQuotes = false;
  private line = 1;
  private recordLine = 1;
  private started = false;
  private fieldStarted = false;

  constructor(private readonly delimiter = ',') {
    if ([...delimiter].length !== 1) throw new Error(`a CSV delimiter is one character, got "${delimiter}"`);
  }

  push(chunk: string): CsvRecord[] {
    const out: CsvRecord[] = [];
    let i = 0;
    if (!this.started) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) i = 1;
    }
    const d = this.delimiter;
    for (; i < chunk.length; i++) {
      const ch = chunk[i];
      if (this.afterCr) {
        this.afterCr = false;
        if (ch === '\n') continue;
      }
      if (this.quoted) {
        if (this.quotePending) {
          this.quotePending = false;
          if (ch === '"') {
            this.field += '"';
            continue;
          }
          this.quoted = false; // the closing quote; this character is handled below as unquoted
        } else {
          if (ch === '"') this.quotePending = true;
          else {
            // a line break inside a quoted field: CR, LF or CRLF counts once, even split across chunks
            if (ch === '\r' || (ch === '\n' && !this.crInQuotes)) this.line++;
            this.crInQuotes = ch === '\r';
            this.field += ch;
          }
          continue;
        }
      }
      if (ch === d) {
        this.fields.push(this.field);
        this.field = '';
        this.fieldStarted = true;
      } else if (ch === '\n' || ch === '\r') {
        this.endRecord(out);
        this.line++;
        if (ch === '\r') this.afterCr = true;
      } else if (ch === '"' && this.field === '' && !this.quoted) {
        this.quoted = true;
        this.fieldStarted = true;
      } else {
        this.field += ch;
        this.fieldStarted = true;
      }
    }
    return out;
  }

  /** Flushes the last record (a file need not end with a line break). */
  end(): CsvRecord[] {
    const out: CsvRecord[] = [];
    if (this.quoted && !this.quotePending) throw new CsvError(`a quoted field opened on line ${this.recordLine} is never closed`, this.recordLine);
    this.quoted = false;
    this.quotePending = false;
    this.endRecord(out);
    return out;
  }

  private endRecord(out: CsvRecord[]): void {
    if (this.fieldStarted || this.field !== '' || this.fields.length > 0) {
      this.fields.push(this.field);
      out.push({ fields: this.fields, line: this.recordLine });
    }
    this.fields = [];
    this.field = '';
    this.fieldStarted = false;
    this.recordLine = this.line + 1;
  }
}

export class CsvError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(message);
  }
}
