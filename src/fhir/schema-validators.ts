/**
 * The R4 JSON schema as this project validates with it, and its ajv validators compiled ahead of time.
 *
 * Compiling a resource type's validator at run time costs 40–350 ms (the first pulls in every data type), and each
 * process — the gateway, every `care-gateway convert`, every test suite — paid it again for the types it met.
 * `npm run build` writes the validators of all R4 resource types as one CommonJS module beside the slim definitions
 * (ajv's standalone code, the same code ajv would compile); a process loads it on its first validation (~0.3 s).
 * Its name carries a digest of ajv's version, the options and the patches below, so a change to any of them finds no
 * file and falls back to compiling at run time (as it does when the build has not run).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { Ajv, type Options, type ValidateFunction } from 'ajv';
import { derivedPath, readDefinitions, resourceTypes } from './definitions.js';

const require = createRequire(import.meta.url);

export const SCHEMA_OPTIONS: Options = { allErrors: true, strict: false, validateFormats: false };

/**
 * The published schema leaves `Resource` and `integer64` dangling; they are defined here. A resource inside a resource
 * (contained, Bundle.entry.resource, Parameters.parameter.resource) is validated on its own with its own type's
 * validator (clear paths, no oneOf-over-150-types noise), so ResourceList is any object here.
 */
const PATCH = {
  define: { Resource: { type: 'object' }, ResourceList: { type: 'object' } },
  defineIfMissing: { integer64: { type: 'string', pattern: '^[0]|[-+]?[1-9][0-9]*$' } },
  drop: ['$schema', 'id', 'oneOf', 'discriminator'],
};

export function fhirSchema(): Record<string, unknown> {
  const schema = structuredClone(readDefinitions<Record<string, unknown>>('fhir.schema.json')) as { definitions: Record<string, unknown>; [k: string]: unknown };
  Object.assign(schema.definitions, structuredClone(PATCH.define));
  for (const [k, v] of Object.entries(PATCH.defineIfMissing)) schema.definitions[k] ??= structuredClone(v);
  for (const k of PATCH.drop) delete schema[k];
  return schema;
}

function precompiledFile(): string {
  const { version } = require('ajv/package.json') as { version: string };
  const digest = crypto.createHash('sha256').update(JSON.stringify({ version, SCHEMA_OPTIONS, PATCH })).digest('hex').slice(0, 16);
  return derivedPath(`schema-validators-${digest}.cjs`);
}

/** Build step (package.json `build`): writes the validators of every R4 resource type; returns the file. */
export function writePrecompiledValidators(): string {
  const standaloneCode = (require('ajv/dist/standalone') as { default: (ajv: Ajv, refs: Record<string, string>) => string }).default;
  const ajv = new Ajv({ ...SCHEMA_OPTIONS, code: { source: true } });
  ajv.addSchema(fhirSchema(), 'fhir');
  const code = standaloneCode(ajv, Object.fromEntries([...resourceTypes()].map((t) => [t, `fhir#/definitions/${t}`])));
  const out = precompiledFile();
  fs.mkdirSync(derivedPath(''), { recursive: true });
  fs.writeFileSync(`${out}.tmp`, code);
  fs.renameSync(`${out}.tmp`, out); // a reader never sees half a file
  return out;
}

let loaded: Record<string, ValidateFunction> | null | undefined;

function precompiled(): Record<string, ValidateFunction> | null {
  if (loaded === undefined) {
    const file = precompiledFile();
    loaded = fs.existsSync(file) ? (require(file) as Record<string, ValidateFunction>) : null;
  }
  return loaded;
}

export function hasPrecompiledValidators(): boolean {
  return loaded !== undefined ? loaded !== null : fs.existsSync(precompiledFile());
}

/** The build's validator of a resource type, or undefined (no build, or written by another ajv or schema). */
export function precompiledValidator(type: string): ValidateFunction | undefined {
  return precompiled()?.[type];
}
