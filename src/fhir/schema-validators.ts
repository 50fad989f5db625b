/**
 * The R4 JSON schema as this project validates with it, and its ajv validators compiled ahead of time.
 *
 * Compiling a resource type's validator at run time costs 40–350 ms (the first pulls in every data type), and each
 * process — the gateway, every `care-gateway convert`, every test suite — paid it again for the types it met.
 * `npm run build` writes the validators of all R4 resource types as one CommonJS module beside the slim definitions
 * (ajv's standalone code, the same code ajv would compile), and V8's code cache of it; a process loads them on its
 * first validation (~0.1 s).
 * Its name carries a digest of ajv's version, the options and the patches below, so a change to any of them finds no
 * file and falls back to compiling at run time (as it does when the build has not run).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import vm from 'node:vm';
import { createRequire } from 'node:module';
import type { Options, ValidateFunction } from 'ajv';
import { derivedPath, readDefinitions, resourceTypes } from './definitions.js';
import { writeDerivedFile } from '../paths.js';

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
  /** a schema's `description` (prose; an element named description is an object here and stays) */
  dropDescriptions: true,
};

function withoutDescriptions(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutDescriptions);
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(Object.entries(v).filter(([k, x]) => !(k === 'description' && typeof x === 'string')).map(([k, x]) => [k, withoutDescriptions(x)]));
}

export function fhirSchema(): Record<string, unknown> {
  // (ajv's standalone code carries the schema's text: without the prose it is ASCII, smaller and faster to load)
  const schema = withoutDescriptions(readDefinitions<Record<string, unknown>>('fhir.schema.json')) as { definitions: Record<string, unknown>; [k: string]: unknown };
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
  const standaloneCode = (require('ajv/dist/standalone') as { default: (ajv: import('ajv').Ajv, refs: Record<string, string>) => string }).default;
  const ajv = new (require('ajv') as typeof import('ajv')).Ajv({ ...SCHEMA_OPTIONS, code: { source: true } });
  ajv.addSchema(fhirSchema(), 'fhir');
  const code = standaloneCode(ajv, Object.fromEntries([...resourceTypes()].map((t) => [t, `fhir#/definitions/${t}`])));
  const out = precompiledFile();
  writeDerivedFile(out, code);
  // V8's code cache of it, taken after each validator ran once (so their compiled code is in it too): a process
  // then skips parsing and compiling 8 MB of JavaScript (loading ~280 ms → ~90 ms)
  const script = compiled(out);
  for (const [type, validate] of Object.entries(evaluate(script))) validate({ resourceType: type });
  writeDerivedFile(`${out}.v8cache`, script.createCachedData(), 'schema-validators-');
  return out;
}

/** The module's code as a script, with V8's code cache when the build wrote one that this V8 accepts. */
function compiled(file: string): vm.Script {
  let cachedData: Buffer | undefined;
  try {
    cachedData = fs.readFileSync(`${file}.v8cache`);
  } catch {
    // none: compiled from the source
  }
  return new vm.Script(`(function (exports, require, module) {${fs.readFileSync(file, 'utf8')}\n})`, { filename: file, cachedData });
}

/** Runs the module's code once, as CommonJS would; its exports. */
function evaluate(script: vm.Script): Record<string, ValidateFunction> {
  const module = { exports: {} as Record<string, ValidateFunction> };
  (script.runInThisContext() as (e: unknown, r: NodeRequire, m: unknown) => void)(module.exports, require, module);
  return module.exports;
}


let loaded: Record<string, ValidateFunction> | null | undefined;

function precompiled(): Record<string, ValidateFunction> | null {
  if (loaded === undefined) {
    const file = precompiledFile();
    loaded = fs.existsSync(file) ? evaluate(compiled(file)) : null;
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
