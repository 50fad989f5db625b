/**
 * The one error type of care-gateway, and the one table that turns an error into every wire format.
 *
 * Parser, mapper, validator, store and router all throw `OutcomeError`, which wraps a FHIR OperationOutcome.
 * Each edge (HTTP, MLLP, CLI, import report) converts with `toOutcome(err)` and reads the wire codes from
 * `CATEGORIES` — nowhere else.
 *
 * @see https://hl7.org/fhir/R4/operationoutcome.html
 * @see HL7 v2.5 table 0008 (MSA-1 acknowledgment code) and table 0357 (ERR-3 message error condition code)
 */
import type { OperationOutcome, OperationOutcomeIssue } from './types.js';

/** A closed set of error categories; everything that can go wrong is one of these. */
export type Category =
  | 'invalid' // content is wrong: a bad field, a failed checksum, a schema violation
  | 'invalid-query' // a search or operation query that cannot be processed (unknown parameter under strict handling, bad value)
  | 'structure' // cannot be parsed at all: malformed JSON, no MSH, broken framing
  | 'unsupported' // well-formed but of a kind we do not handle: message type, media type, interaction
  | 'not-found'
  | 'gone' // deleted
  | 'conflict' // version conflict, duplicate control id with other content
  | 'precondition' // If-Match stale, conditional create matched several
  | 'too-large'
  | 'forbidden'
  | 'unauthorized'
  | 'not-allowed' // the interaction is never allowed on this resource type (AuditEvent and Provenance are append-only)
  | 'rate-limited' // too many requests from this client
  | 'busy' // shutting down or overloaded
  | 'fault'; // our own bug or a store failure

export interface CategoryRow {
  /** HTTP status code */
  http: number;
  /** OperationOutcome.issue.code (http://hl7.org/fhir/issue-type) */
  issueCode: OperationOutcomeIssue['code'];
  /** MSA-1: AE = application error (content), AR = application reject (cannot be processed at all) */
  msa1: 'AE' | 'AR';
  /** ERR-3 code from HL7 table 0357 */
  err3: string;
  /** stable error code prefix shown in the README's error table */
  code: string;
}

/** The one table. README.md's error table is checked against it by test/fhir/outcome.test.ts. */
export const CATEGORIES: Record<Category, CategoryRow> = {
  invalid: { http: 422, issueCode: 'invalid', msa1: 'AE', err3: '207', code: 'CG-INVALID' },
  'invalid-query': { http: 400, issueCode: 'invalid', msa1: 'AE', err3: '207', code: 'CG-INVALID-QUERY' },
  structure: { http: 400, issueCode: 'structure', msa1: 'AR', err3: '100', code: 'CG-STRUCTURE' },
  unsupported: { http: 400, issueCode: 'not-supported', msa1: 'AR', err3: '200', code: 'CG-UNSUPPORTED' },
  'not-found': { http: 404, issueCode: 'not-found', msa1: 'AE', err3: '204', code: 'CG-NOT-FOUND' },
  gone: { http: 410, issueCode: 'deleted', msa1: 'AE', err3: '204', code: 'CG-GONE' },
  conflict: { http: 409, issueCode: 'conflict', msa1: 'AR', err3: '205', code: 'CG-CONFLICT' },
  precondition: { http: 412, issueCode: 'conflict', msa1: 'AE', err3: '207', code: 'CG-PRECONDITION' },
  'too-large': { http: 413, issueCode: 'too-costly', msa1: 'AR', err3: '100', code: 'CG-TOO-LARGE' },
  forbidden: { http: 403, issueCode: 'forbidden', msa1: 'AR', err3: '207', code: 'CG-FORBIDDEN' },
  unauthorized: { http: 401, issueCode: 'login', msa1: 'AR', err3: '207', code: 'CG-UNAUTHORIZED' },
  'not-allowed': { http: 405, issueCode: 'not-supported', msa1: 'AR', err3: '200', code: 'CG-NOT-ALLOWED' },
  'rate-limited': { http: 429, issueCode: 'throttled', msa1: 'AR', err3: '207', code: 'CG-RATE-LIMITED' },
  busy: { http: 503, issueCode: 'transient', msa1: 'AR', err3: '207', code: 'CG-BUSY' },
  fault: { http: 500, issueCode: 'exception', msa1: 'AR', err3: '207', code: 'CG-FAULT' },
};

/** Where an issue is: a FHIRPath (`Patient.identifier[0].value`), an HL7 position (`PID-3.1`) or `row 4, column isikukood`. */
export interface IssueInput {
  category?: Category;
  severity?: OperationOutcomeIssue['severity'];
  text: string;
  /** FHIRPath expression(s), HL7 location(s) like `PID-3.1`, or `row N` / `row N, column X` */
  where?: string | string[];
  /** overrides the issue code from the category table */
  issueCode?: OperationOutcomeIssue['code'];
}

export const CATEGORY_EXTENSION = 'https://care-gateway.ee/fhir/StructureDefinition/error-category';

/** Build one OperationOutcome issue. */
/**
 * Where a check is in a resource: the resource's path, or a step below another place. Validators carry this while
 * walking and spell it out (`pathText`) only for an issue, so a valid resource costs no path strings.
 */
export type At = string | { up: At; key: string; index?: number };

/** The FHIRPath-style location of `at` (`CarePlan.activity[0].detail`). */
export function pathText(at: At): string {
  if (typeof at === 'string') return at;
  const here = at.index === undefined ? at.key : `${at.key}[${at.index}]`;
  return `${pathText(at.up)}.${here}`;
}

export function issue(input: IssueInput): OperationOutcomeIssue {
  const category = input.category ?? 'invalid';
  const row = CATEGORIES[category];
  const out: OperationOutcomeIssue = {
    severity: input.severity ?? 'error',
    code: input.issueCode ?? row.issueCode,
    details: { coding: [{ system: 'https://care-gateway.ee/fhir/CodeSystem/error-code', code: row.code }], text: input.text },
    diagnostics: input.text,
  };
  if (input.where !== undefined) out.expression = Array.isArray(input.where) ? input.where : [input.where];
  return out;
}

/** The error every layer throws. It carries a complete OperationOutcome and the category that decides wire codes. */
export class OutcomeError extends Error {
  readonly category: Category;
  readonly outcome: OperationOutcome;

  constructor(category: Category, outcomeOrText: OperationOutcome | string, where?: string | string[]) {
    const outcome: OperationOutcome =
      typeof outcomeOrText === 'string'
        ? { resourceType: 'OperationOutcome', issue: [issue({ category, text: outcomeOrText, where })] }
        : outcomeOrText;
    super(outcome.issue.map((i) => i.diagnostics ?? i.details?.text ?? i.code).join('; '));
    this.name = 'OutcomeError';
    this.category = category;
    this.outcome = outcome;
  }

  /** Throw once with every collected error issue (warnings and information ride along). */
  static fromIssues(category: Category, issues: OperationOutcomeIssue[]): OutcomeError {
    return new OutcomeError(category, { resourceType: 'OperationOutcome', issue: issues });
  }

  get status(): number {
    return CATEGORIES[this.category].http;
  }
}

/** A content error raised while reading a query (search, history, $everything) is a bad request: 400, not 422. */
export function asQueryError(raw: unknown): unknown {
  const err = raw instanceof OutcomeError ? raw : toOutcomeError(raw);
  if (err.category === 'fault') return raw;
  if (err.category !== 'invalid') return err;
  const from = CATEGORIES.invalid.code;
  const to = CATEGORIES['invalid-query'].code;
  const issues = err.outcome.issue.map((i) => ({
    ...i,
    ...(i.details ? { details: { ...i.details, coding: (i.details.coding ?? []).map((c) => (c.code === from ? { ...c, code: to } : c)) } } : {}),
  }));
  return new OutcomeError('invalid-query', { ...err.outcome, issue: issues });
}

/** Canned outcomes, named after what happened. */
export const notFound = (what: string): OutcomeError => new OutcomeError('not-found', `${what} not found`);
export const badRequest = (text: string, where?: string | string[]): OutcomeError =>
  new OutcomeError('invalid', text, where);

/** Any thrown value → OutcomeError. Unknown errors become `fault` without leaking internals. */
export function toOutcomeError(err: unknown): OutcomeError {
  if (err instanceof OutcomeError) return err;
  // PostgreSQL's "data exception" class (22xxx): a date, number or text from the request out of range or malformed
  // (a month 13, a year past 294276, a bigint past 2^63) — the client's value, not our fault
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code)) return new OutcomeError('invalid', 'a value in the request is out of range or malformed (a date, a number or a cursor)');
  return new OutcomeError('fault', 'Internal error; the server log has the details (no patient data in it).');
}

/** An OperationOutcome that reports success or information only. */
export function informational(text: string, issues: OperationOutcomeIssue[] = []): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'information', code: 'informational', diagnostics: text }, ...issues],
  };
}

/** True when the outcome has an issue of severity error or fatal. */
export function hasErrors(issues: OperationOutcomeIssue[]): boolean {
  return issues.some((i) => i.severity === 'error' || i.severity === 'fatal');
}
