/**
 * `care-gateway convert` without the command line: a file (HL7 v2, FHIR JSON, a municipal export) → a FHIR Bundle and,
 * apart from it, what the conversion noted. A module of its own so tests and tools can convert without running the
 * command line (src/cli.ts runs on import).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { OutcomeError } from './fhir/outcome.js';
import { decodeHl7 } from './hl7v2/decode.js';
import { parseHl7 } from './hl7v2/parse.js';
import { convertHl7 } from './mapping/hl7v2/convert.js';
import { facilityCharset } from './mapping/hl7v2/load.js';
import { validateResource } from './fhir/validate.js';
import type { OperationOutcome, OperationOutcomeIssue } from './fhir/types.js';
import { socialMapping, socialSources } from './social/mapping.js';
import { readRecords } from './social/records.js';
import { checkRecord, contributionFor } from './social/convert.js';

/**
 * Converts one file; returns the Bundle and, apart from it, what the conversion noted (fields not mapped, rows
 * refused) — the Bundle stays one a FHIR server takes as it is (`POST /fhir`) — or throws an OutcomeError.
 */
export function convertFile(file: string, opts: { source?: string; defaultCharset?: string; charset?: string } = {}): { bundle: Bundle; notes?: OperationOutcome } {
  if (!fs.existsSync(file)) throw new OutcomeError('not-found', `no such file: ${file}`);
  const bytes = fs.readFileSync(file);
  const ext = path.extname(file).toLowerCase();
  if (opts.source) return convertSocial(file, bytes, opts.source);
  if (ext === '.json') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      throw new OutcomeError('structure', `${file} is not valid JSON: ${(e as Error).message}`);
    }
    const resources = (parsed as Bundle).resourceType === 'Bundle' ? ((parsed as Bundle).entry ?? []).map((e) => e.resource).filter((r): r is Resource => !!r) : [parsed as Resource];
    const issues = resources.flatMap((r, i) => validateResource(r, (parsed as Bundle).resourceType === 'Bundle' ? `Bundle.entry[${i}].resource` : undefined));
    if (issues.some((i) => i.severity === 'error')) throw OutcomeError.fromIssues('invalid', issues);
    return { bundle: { resourceType: 'Bundle', type: 'collection', entry: resources.map((resource) => ({ fullUrl: `${resource.resourceType}/${resource.id ?? ''}`, resource })) } };
  }
  const { text } = decodeHl7(bytes, opts.charset ?? opts.defaultCharset ?? 'utf-8', opts.charset ? undefined : facilityCharset);
  return hl7Bundle(text);
}

/**
 * HL7 v2 text (one message or several, each from its MSH) → a transaction Bundle of PUT-by-id entries, each resource
 * valid FHIR R4, and what was not mapped as notes apart from it.
 */
export function hl7Bundle(text: string): { bundle: Bundle; notes?: OperationOutcome } {
  const entry: BundleEntry[] = [];
  const issues = [];
  for (const one of text.split(/\r(?=MSH\|)/)) {
    const c = convertHl7(parseHl7(one));
    if (c.issues.some((i) => i.severity === 'error')) throw OutcomeError.fromIssues('invalid', c.issues);
    issues.push(...c.issues);
    for (const r of [c.patient, ...c.resources]) {
      const v = validateResource(r).filter((i) => i.severity === 'error');
      if (v.length) throw OutcomeError.fromIssues('invalid', v);
      entry.push({ ...(UUID.test(r.id ?? '') ? { fullUrl: `urn:uuid:${r.id}` } : {}), resource: r, request: { method: 'PUT', url: `${r.resourceType}/${r.id}` } });
    }
  }
  // a transaction of PUT-by-id entries (their references to each other resolve within it): posting it twice changes
  // nothing (ids come from the source identifiers); what was not mapped comes apart from it (standard error), so
  // nothing is dropped silently and the Bundle posts as it is
  const bundle: Bundle = { resourceType: 'Bundle', type: 'transaction', entry };
  return { bundle, ...(issues.length ? { notes: { resourceType: 'OperationOutcome', issue: issues } } : {}) };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * A municipal export → a collection Bundle of what its good rows become (Patient stubs, ServiceRequests,
 * case workers, caregivers, schools); rejected rows ride along in an OperationOutcome entry with row and field.
 * If no row is good, the whole file fails.
 */
function convertSocial(file: string, bytes: Buffer, source: string): { bundle: Bundle; notes?: OperationOutcome } {
  const mapping = socialMapping(source);
  if (!mapping) throw new OutcomeError('not-found', `no mapping for social-care source "${source}" (known: ${socialSources().join(', ')})`);
  const entry: BundleEntry[] = [];
  const seen = new Set<string>();
  const issues: OperationOutcomeIssue[] = [];
  let rows = 0;
  let good = 0;
  for (const raw of readRecords(mapping, bytes)) {
    rows++;
    const { decision, errors } = checkRecord(mapping, raw);
    for (const e of errors) issues.push({ severity: 'error', code: 'invalid', diagnostics: `row ${e.row} (${e.at}), ${e.field}${e.column ? ` [${e.column}]` : ''}: ${e.reason}`, expression: [`row[${e.row}].${e.field}`] });
    if (!decision) continue;
    good++;
    const c = contributionFor(mapping, decision, path.basename(file));
    for (const r of [c.organization!, c.patient, ...c.resources]) {
      const key = `${r.resourceType}/${r.id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const v = validateResource(r).filter((i) => i.severity === 'error');
      if (v.length) throw OutcomeError.fromIssues('invalid', v);
      entry.push({ ...(/^[0-9a-f]{8}-[0-9a-f]{4}-/.test(r.id ?? '') ? { fullUrl: `urn:uuid:${r.id}` } : {}), resource: r });
    }
  }
  if (rows > 0 && good === 0) throw OutcomeError.fromIssues('invalid', issues);
  return { bundle: { resourceType: 'Bundle', type: 'collection', entry }, ...(issues.length ? { notes: { resourceType: 'OperationOutcome', issue: issues } } : {}) };
}

