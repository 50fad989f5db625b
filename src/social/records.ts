/**
 * Reads a municipal export into raw records (field → text) as the mapping says, one record at a time:
 * CSV is decoded and split incrementally in 64 KiB steps (memory does not grow with the file); JSON is parsed
 * as one document (exports of this shape are small — a CSV is the format for bulk loads).
 */
import iconv from 'iconv-lite';
import { OutcomeError } from '../fhir/outcome.js';
import { CsvReader, CsvError } from './csv.js';
import { fold, type Field, type SocialMapping } from './mapping.js';

export interface RawRecord {
  /** 1-based position of the decision in the file (data rows, without the header) */
  row: number;
  /** CSV: the line the row starts on; JSON: the path of the record */
  at: string;
  values: Partial<Record<Field, string>>;
}

const STEP = 64 * 1024;

export function* readRecords(mapping: SocialMapping, bytes: Buffer): Generator<RawRecord> {
  if (mapping.format === 'json') {
    yield* readJson(mapping, bytes);
    return;
  }
  const decoder = iconv.getDecoder(mapping.encoding, { stripBOM: true });
  const csv = new CsvReader(mapping.delimiter);
  let columns: Map<Field, number> | undefined;
  let row = 0;
  function* emit(records: ReturnType<CsvReader['push']>): Generator<RawRecord> {
    for (const rec of records) {
      if (!columns) {
        columns = headerColumns(mapping, rec.fields);
        continue;
      }
      if (rec.fields.every((f) => f.trim() === '')) continue;
      row++;
      const values: Partial<Record<Field, string>> = {};
      for (const [field, rule] of mapping.fields) {
        const idx = columns.get(field);
        const v = idx === undefined ? rule.value : rec.fields[idx];
        if (v !== undefined && v.trim() !== '') values[field] = v.trim();
      }
      yield { row, at: `line ${rec.line}`, values };
    }
  }
  try {
    for (let off = 0; off < bytes.length; off += STEP) {
      yield* emit(csv.push(decoder.write(bytes.subarray(off, off + STEP))));
    }
    const tail = decoder.end();
    if (tail) yield* emit(csv.push(tail));
    yield* emit(csv.end());
  } catch (e) {
    if (e instanceof CsvError) throw new OutcomeError('structure', `the CSV file is malformed: ${e.message}`, `line ${e.line}`);
    throw e;
  }
  if (!columns) throw new OutcomeError('structure', 'the file is empty: a CSV export starts with a header row', 'line 1');
}

function headerColumns(mapping: SocialMapping, header: string[]): Map<Field, number> {
  if (header.some((h) => h.includes('\ufffd'))) {
    throw new OutcomeError('structure', `the header row is not readable as ${mapping.encoding}: declare the export's encoding (e.g. windows-1257) in mapping ${mapping.source}`, 'line 1');
  }
  const index = new Map(header.map((h, i) => [fold(h), i]));
  const columns = new Map<Field, number>();
  const missing: string[] = [];
  for (const [field, rule] of mapping.fields) {
    if (!rule.from) continue;
    const i = index.get(fold(rule.from));
    if (i === undefined) missing.push(rule.from);
    else columns.set(field, i);
  }
  if (missing.length) {
    const delim = header.length === 1 && header[0].includes(mapping.delimiter === ';' ? ',' : ';') ? ` (is the delimiter "${mapping.delimiter}" right?)` : '';
    throw new OutcomeError('structure', `the header row lacks the column(s) ${missing.map((m) => `"${m}"`).join(', ')} that mapping ${mapping.source} reads${delim}`, 'line 1');
  }
  return columns;
}

function* readJson(mapping: SocialMapping, bytes: Buffer): Generator<RawRecord> {
  let doc: unknown;
  try {
    doc = JSON.parse(iconv.decode(bytes, mapping.encoding, { stripBOM: true }));
  } catch (e) {
    throw new OutcomeError('structure', `the file is not valid JSON: ${(e as Error).message}`);
  }
  const list = mapping.records ? pick(doc, mapping.records) : doc;
  if (!Array.isArray(list)) throw new OutcomeError('structure', `expected an array of decisions at "${mapping.records || '(the document)'}"`, mapping.records || '$');
  for (let i = 0; i < list.length; i++) {
    const rec = list[i];
    const values: Partial<Record<Field, string>> = {};
    for (const [field, rule] of mapping.fields) {
      const v = rule.from ? pick(rec, rule.from) : rule.value;
      if (v === undefined || v === null) continue;
      const s = typeof v === 'object' ? JSON.stringify(v) : String(v).trim();
      if (s !== '') values[field] = s;
    }
    yield { row: i + 1, at: `${mapping.records || '$'}[${i}]`, values };
  }
}

/** A dotted path with optional indexes: `klient.isikukood`, `hooldajad[0].nimi`. */
export function pick(v: unknown, p: string): unknown {
  let cur = v;
  for (const part of p.split('.')) {
    const m = /^([^[\]]*)((?:\[\d+\])*)$/.exec(part);
    if (!m) return undefined;
    if (m[1]) {
      if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
      cur = (cur as Record<string, unknown>)[m[1]];
    }
    for (const idx of m[2].match(/\d+/g) ?? []) {
      if (!Array.isArray(cur)) return undefined;
      cur = cur[Number(idx)];
    }
    if (cur === undefined) return undefined;
  }
  return cur;
}
