/**
 * The command line:
 *   care-gateway [serve]                         run the gateway (same as npm start)
 *   care-gateway convert FILE [--source NAME]    convert one file to a FHIR Bundle on standard output,
 *                                                without a server or store
 * FILE.hl7: one or more HL7 v2 messages → one transaction Bundle of PUT-by-id entries, which `POST /fhir` takes as it is
 * (what was not mapped goes to standard error as an OperationOutcome);
 * FILE.json: a FHIR resource or Bundle, validated and printed back. FILE.csv|json --source NAME: a municipal
 * social-care export read through mappings/social/NAME.yaml.
 * Exit code 0 on success; 1 with a readable error (an OperationOutcome on standard error) otherwise.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';
import { OutcomeError, toOutcomeError } from './fhir/outcome.js';
import { loadConfig } from './config.js';
import { decodeHl7 } from './hl7v2/decode.js';
import { parseHl7 } from './hl7v2/parse.js';
import { convertHl7 } from './mapping/hl7v2/convert.js';
import { facilityCharset, setHl7MappingsDir } from './mapping/hl7v2/load.js';
import { devKeys, DEV_ISSUER } from './auth/dev-keys.js';
import { setDefaultZone } from './mapping/datatypes.js';
import { validateResource } from './fhir/validate.js';
import type { OperationOutcome, OperationOutcomeIssue } from './fhir/types.js';
import { setSocialMappingsDir, socialMapping, socialSources } from './social/mapping.js';
import { buildProfiles } from './fhir/profiles.js';
import { readRecords } from './social/records.js';
import { checkRecord, contributionFor } from './social/convert.js';

const USAGE = 'usage: care-gateway convert FILE [--source NAME] [--charset NAME]   |   care-gateway dev-keys [DIR]   |   care-gateway profiles   |   care-gateway [serve]';

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

async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'serve') {
    await import('./main.js');
    return -1; // the server keeps running
  }
  if (cmd === 'profiles') {
    // regenerates profiles/StructureDefinition-*.json (snapshots) from the differentials in profiles/src
    for (const f of buildProfiles()) process.stdout.write(`${f}\n`);
    return 0;
  }
  if (cmd === 'dev-keys') {
    // a trial with authentication on: a JWKS, and a token for each kind of caller
    const dir = rest.find((a) => !a.startsWith('--')) ?? 'dev-keys';
    const config = loadConfig();
    const audience = config.baseUrl ?? `http://${config.host === '0.0.0.0' ? 'localhost' : config.host}:${config.port}/fhir`;
    const { jwks, tokens } = devKeys(dir, audience, config.auth?.maxLifetimeS ?? 3600);
    process.stdout.write(`AUTH_JWKS=${path.resolve(jwks)}\nAUTH_ISSUERS=${DEV_ISSUER}\nAUTH_AUDIENCE=${audience}\n`);
    for (const [k, v] of Object.entries(tokens)) process.stdout.write(`${k}_TOKEN=${v}\n`);
    return 0;
  }
  if (cmd !== 'convert') {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const file = rest.find((a) => !a.startsWith('--'));
  const si = rest.indexOf('--source');
  const source = si >= 0 ? rest[si + 1] : undefined;
  const ci = rest.indexOf('--charset');
  const charset = ci >= 0 ? rest[ci + 1] : undefined;
  if (!file || (si >= 0 && !source) || (ci >= 0 && !charset)) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  const config = loadConfig();
  setDefaultZone(config.hl7DefaultTimezone);
  setSocialMappingsDir(config.socialMappingsDir); // a deployment's own export mappings, as the server reads them
  setHl7MappingsDir(config.hl7MappingsDir);
  try {
    const { bundle, notes } = convertFile(file, { source, defaultCharset: config.hl7DefaultCharset, charset });
    process.stdout.write(JSON.stringify(bundle, null, 2) + '\n');
    if (notes) process.stderr.write(`care-gateway: conversion notes (not part of the Bundle):\n${JSON.stringify(notes, null, 2)}\n`);
    return 0;
  } catch (err) {
    const e = toOutcomeError(err);
    process.stderr.write(`care-gateway: ${e.message}\n${JSON.stringify(e.outcome, null, 2)}\n`);
    return 1;
  }
}

run(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`care-gateway: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
