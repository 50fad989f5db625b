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
import path from 'node:path';
import { toOutcomeError } from './fhir/outcome.js';
import { loadConfig } from './config.js';
import { setHl7MappingsDir } from './mapping/hl7v2/load.js';
import { devKeys, DEV_ISSUER } from './auth/dev-keys.js';
import { setDefaultZone } from './mapping/datatypes.js';
import { setSocialMappingsDir } from './social/mapping.js';
import { buildProfiles } from './fhir/profiles.js';
import { convertFile } from './convert.js';

const USAGE = 'usage: care-gateway convert FILE [--source NAME] [--charset NAME]   |   care-gateway dev-keys [DIR]   |   care-gateway profiles   |   care-gateway [serve]';

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
