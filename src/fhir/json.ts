/**
 * Request bodies as JSON, with bounds: what a client sends is decoded and checked before `JSON.parse` builds it, so a
 * body within MAX_BODY_BYTES still cannot make the server walk a million-deep nesting or a million-element array.
 *
 * One pass over the text (`checkJsonShape`) tracks the nesting depth, the elements of each open array and the number
 * of JSON values, skipping strings with `indexOf` (escaped quotes counted back); it stops at the first limit passed,
 * so a pathological 10 MB body is refused after reading its first few kilobytes to at most a few hundred. Only then
 * does `JSON.parse` run (which refuses syntax errors; the pass does not judge syntax).
 *
 * Refusals (src/fhir/outcome.ts CATEGORIES): past a limit → `too-large` (413, issue code too-costly); bytes that are
 * not UTF-8, a NUL character (raw or `\u0000`: no FHIR string may hold one, and PostgreSQL text cannot store it), a
 * JSON syntax error → `structure` (400); a declared charset other than UTF-8 → `unsupported` (400).
 *
 * @see https://www.rfc-editor.org/rfc/rfc8259 (JSON text exchanged between systems SHALL be UTF-8)
 * @see https://hl7.org/fhir/R4/json.html, https://hl7.org/fhir/R4/datatypes.html#string
 */
import { OutcomeError } from './outcome.js';

export interface JsonLimits {
  /** deepest nesting of arrays and objects (MAX_JSON_DEPTH) */
  maxDepth: number;
  /** most elements of any one array (MAX_ARRAY_LENGTH) */
  maxArray: number;
  /** most JSON values in the whole body: objects, arrays, strings, numbers, literals; keys not counted (MAX_JSON_VALUES) */
  maxElements: number;
  /** most entries of a transaction, batch or message Bundle (MAX_BUNDLE_ENTRIES), checked by `bundleEntryLimit` */
  maxBundleEntries: number;
}

/**
 * - depth 100: the deepest FHIR R4 resources nest a few dozen levels (a Questionnaire's items in items, extensions in
 *   extensions); past 100 nothing is a resource any more, and later recursive walks (validation, FHIRPath, the
 *   serialiser) are safe from stack exhaustion.
 * - 1,000 elements in one array: the largest lists in what this gateway receives are Bundle.entry (bounded to the
 *   same 1,000) and a CareTeam's or Group's members; no element of one resource repeats anywhere near 1,000 times in a
 *   care record (a Patient with 50,000 identifiers is abuse, not data). It bounds the work any single list costs the
 *   validator, the indexer (one index row per value) and the store: a Patient with 9,999 identifiers held the
 *   gateway's event loop for ~230 ms (validation and index rows, on PostgreSQL); 1,000 keep it under ~30 ms.
 * - 500,000 values: about one value per 20 bytes of a 10 MB body (MAX_BODY_BYTES) — far above a 1,000-entry
 *   transaction (~40 values an entry); it bounds the objects `JSON.parse` allocates for one request.
 * - 1,000 Bundle entries: one transaction is one database transaction; a larger upload is split by the sender.
 */
export const DEFAULT_JSON_LIMITS: Readonly<JsonLimits> = Object.freeze({ maxDepth: 100, maxArray: 1_000, maxElements: 500_000, maxBundleEntries: 1_000 });

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The body as JSON, or an OutcomeError: not UTF-8, a NUL character, past one of `limits`, or not JSON. A leading
 * byte order mark is dropped (RFC 8259 §8.1 lets a parser ignore it).
 */
export function parseJsonBody(body: Uint8Array | undefined, limits: Partial<JsonLimits> = DEFAULT_JSON_LIMITS): unknown {
  let text: string;
  try {
    text = utf8.decode(body ?? new Uint8Array(0));
  } catch {
    throw new OutcomeError('structure', 'the body is not valid UTF-8: FHIR JSON is UTF-8 encoded (resend it as UTF-8)');
  }
  checkJsonShape(text, limits);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OutcomeError('structure', `the body is not valid JSON: ${(err as Error).message}`);
  }
}

const nul = (at: number): OutcomeError =>
  new OutcomeError('structure', `the body contains a NUL character (U+0000) at character ${at}: FHIR strings cannot hold it`);

const tooLarge = (text: string): OutcomeError => new OutcomeError('too-large', text);

/**
 * Checks a JSON text against `limits` and for NUL characters in one pass, without parsing it; throws the first
 * breach. Malformed JSON is left to `JSON.parse` (the counts then may be anything, but the text is refused anyway).
 */
export function checkJsonShape(text: string, limits: Partial<JsonLimits> = DEFAULT_JSON_LIMITS): void {
  const maxDepth = limits.maxDepth ?? DEFAULT_JSON_LIMITS.maxDepth;
  const maxArray = limits.maxArray ?? DEFAULT_JSON_LIMITS.maxArray;
  const maxElements = limits.maxElements ?? DEFAULT_JSON_LIMITS.maxElements;
  // NUL, raw anywhere or as an escape in a string (a backslash-u-0000 preceded by an escaped backslash is text)
  const raw = text.indexOf('\0');
  if (raw >= 0) throw nul(raw);
  for (let at = text.indexOf('\\u0000'); at >= 0; at = text.indexOf('\\u0000', at + 1)) {
    let b = at - 1;
    while (b >= 0 && text.charCodeAt(b) === 0x5c) b--;
    if ((at - 1 - b) % 2 === 0) throw nul(at);
  }
  // per open container: elements so far (arrays), or -1 (objects); index 0 is the top level
  const counts: number[] = [-1];
  let depth = 0;
  let values = 0;
  let expectKey = false; // in an object, before its next key
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0x3a /* : */) continue;
    if (c === 0x2c /* , */) {
      expectKey = counts[depth] < 0 && depth > 0;
      continue;
    }
    if (c === 0x5d /* ] */ || c === 0x7d /* } */) {
      if (depth === 0) return; // closes nothing: not JSON
      depth--;
      expectKey = false;
      continue;
    }
    if (c === 0x22 /* " */) {
      // to the closing quote: one not preceded by an odd run of backslashes
      let from = i + 1;
      for (;;) {
        const q = text.indexOf('"', from);
        if (q < 0) return; // unterminated: not JSON
        let b = q - 1;
        while (b > i && text.charCodeAt(b) === 0x5c) b--;
        from = q + 1;
        if ((q - 1 - b) % 2 === 0) break;
      }
      i = from - 1;
      if (expectKey) {
        expectKey = false;
        continue;
      }
    } else if (c !== 0x5b /* [ */ && c !== 0x7b /* { */) {
      // a number, true, false, null (or something JSON.parse refuses): one value, to its end
      while (i + 1 < n) {
        const d = text.charCodeAt(i + 1);
        if (d === 0x2c || d === 0x5d || d === 0x7d || d === 0x20 || d === 0x0a || d === 0x0d || d === 0x09 || d === 0x3a || d === 0x22 || d === 0x5b || d === 0x7b) break;
        i++;
      }
    }
    // a value starts here
    if (++values > maxElements) throw tooLarge(`the body has more than ${maxElements} JSON values; at most ${maxElements} are accepted (MAX_JSON_VALUES)`);
    if (counts[depth] >= 0 && ++counts[depth] > maxArray) {
      throw tooLarge(`an array in the body has more than ${maxArray} elements (the element past the limit is at character ${i}); at most ${maxArray} are accepted (MAX_ARRAY_LENGTH)`);
    }
    if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) throw tooLarge(`the body nests arrays and objects more than ${maxDepth} deep (at character ${i}); at most ${maxDepth} levels are accepted (MAX_JSON_DEPTH)`);
      counts[depth] = c === 0x5b ? 0 : -1;
      expectKey = c === 0x7b;
    }
  }
}

/**
 * Refuses (413) a Bundle with more entries than `limits.maxBundleEntries`; anything else passes. Call it on the
 * parsed body of a transaction, batch or message submission before planning its entries.
 */
export function bundleEntryLimit(bundle: unknown, limits: Partial<JsonLimits> = DEFAULT_JSON_LIMITS): void {
  const max = limits.maxBundleEntries ?? DEFAULT_JSON_LIMITS.maxBundleEntries;
  const entry = bundle && typeof bundle === 'object' ? (bundle as { entry?: unknown }).entry : undefined;
  if (Array.isArray(entry) && entry.length > max) {
    throw new OutcomeError('too-large', `the Bundle has ${entry.length} entries; at most ${max} are accepted in one request (MAX_BUNDLE_ENTRIES): send it in parts`, 'Bundle.entry');
  }
}

/**
 * Refuses (400, `unsupported`) a FHIR JSON body whose Content-Type declares a charset other than UTF-8
 * (`application/fhir+json; charset=iso-8859-1`): FHIR JSON is always UTF-8, and decoding such a body as UTF-8 would
 * store replacement characters or the wrong letters. No charset, `utf-8` or `utf8` (any case, quoted or not) pass.
 */
export function checkJsonCharset(contentType: string | undefined): void {
  if (!contentType) return;
  for (const param of contentType.split(';').slice(1)) {
    const eq = param.indexOf('=');
    if (eq < 0 || param.slice(0, eq).trim().toLowerCase() !== 'charset') continue;
    const charset = param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase();
    if (charset !== 'utf-8' && charset !== 'utf8') {
      const shown = charset.length > 40 ? `${charset.slice(0, 40)}…` : charset;
      throw new OutcomeError('unsupported', `the body is declared charset=${shown}, but FHIR JSON is UTF-8: resend it encoded as UTF-8 (charset=utf-8)`, 'Content-Type');
    }
  }
}
