/**
 * Reading the project's YAML data files (mappings/, and a site's folders beside them) checked against the JSON Schema
 * of their kind (mappings/schema/<kind>.schema.json). A typo — an unknown key, a value the code does not know, a
 * duplicate key, bad YAML — stops the start with the file, the line and the path in the file, not a stack trace
 * from somewhere later.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import { createRequire } from 'node:module';
import type { Node } from 'yaml';
import type { Ajv, ErrorObject, ValidateFunction } from 'ajv';
import { mappingsDir, moduleSource, writeDerivedFile } from './paths.js';

const require = createRequire(import.meta.url);
/** yaml and ajv are loaded only for a file the build has not checked: a start with the project's files needs neither */
const yaml = (): typeof import('yaml') => require('yaml') as typeof import('yaml');

export type DataFileKind = 'hl7v2-common' | 'hl7v2-message' | 'hl7v2-resource' | 'codes' | 'facilities' | 'careplan-rules' | 'social-source' | 'directory' | 'fhir-message-events';

const validators = new Map<DataFileKind, ValidateFunction>();
let ajv: Ajv | undefined;

function validatorFor(kind: DataFileKind): ValidateFunction {
  let v = validators.get(kind);
  if (!v) {
    ajv ??= new (require('ajv') as typeof import('ajv')).Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
    const schema = JSON.parse(fs.readFileSync(path.join(mappingsDir(), 'schema', `${kind}.schema.json`), 'utf8')) as object;
    v = ajv.compile(schema);
    validators.set(kind, v);
  }
  return v;
}

/** A problem in a data file, as `file:line: path: message`. */
export class DataFileError extends Error {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly at: string,
    message: string,
  ) {
    super(`${file}${line ? `:${line}` : ''}: ${at ? `${at}: ` : ''}${message}`);
  }
}

/**
 * Reads a YAML file and checks it against its kind's schema. `label` is how errors name the file (e.g.
 * `mappings/hl7v2/resources/Patient.yaml`); it defaults to the path given.
 */
export function readDataFile<T>(file: string, kind: DataFileKind, label = file): T {
  const text = fs.readFileSync(file, 'utf8');
  return parseDataFile<T>(text, kind, label);
}

export function parseDataFile<T>(text: string, kind: DataFileKind, label: string, opts: { fresh?: boolean } = {}): T {
  const key = `${kind}:${crypto.createHash('sha256').update(text).digest('base64url')}`;
  const known = recording || opts.fresh ? undefined : checkedFiles().get(key);
  if (known) return v8.deserialize(known) as T;
  const value = parseAndCheck<T>(text, kind, label);
  recording?.set(key, v8.serialize(value));
  return value;
}

/**
 * The files the build checked (writeCheckedFiles): each one's value, by its kind and a digest of its text. A start
 * reads the project's mapping files from it instead of parsing YAML and compiling schemas (~0.35 s); a file that is
 * not in it — a site's own, one edited since the build — is parsed and checked as ever. The cache's name carries a
 * digest of the schemas and of this module, so a changed schema or check finds no cache.
 */
let checked: Map<string, Buffer> | undefined;
let recording: Map<string, Buffer> | undefined;

function checkedFilesPath(): string {
  const hash = crypto.createHash('sha256');
  hash.update(moduleSource(import.meta.url));
  const schemas = path.join(mappingsDir(), 'schema');
  for (const f of fs.readdirSync(schemas).sort()) hash.update(f).update(fs.readFileSync(path.join(schemas, f)));
  hash.update((require('yaml/package.json') as { version: string }).version);
  const cacheDir = path.join(path.dirname(require.resolve('yaml/package.json')), '..', '.cache', 'care-gateway');
  return path.join(cacheDir, `data-files-${hash.digest('hex').slice(0, 16)}.v8`);
}

function checkedFiles(): Map<string, Buffer> {
  if (!checked) {
    try {
      checked = v8.deserialize(fs.readFileSync(checkedFilesPath())) as Map<string, Buffer>;
    } catch {
      checked = new Map(); // no build yet
    }
  }
  return checked;
}

/** What each file under mappings/ is (its reader names the same kind); anything else there is documentation or an example. */
const KINDS: [RegExp, DataFileKind][] = [
  [/^hl7v2\/messages\/[^/]+\.yaml$/, 'hl7v2-message'],
  [/^hl7v2\/resources\/[^/]+\.yaml$/, 'hl7v2-resource'],
  [/^hl7v2\/common\.yaml$/, 'hl7v2-common'],
  [/^codes\/[^/]+\.yaml$/, 'codes'],
  [/^facilities\.yaml$/, 'facilities'],
  [/^careplan\/rules\.yaml$/, 'careplan-rules'],
  [/^social\/[^/]+\.(yaml|yml|json)$/, 'social-source'],
  [/^directory\/municipalities\.yaml$/, 'directory'],
  [/^fhir\/message-events\.yaml$/, 'fhir-message-events'],
];

/** The kind of a file under mappings/ (its path relative to it, with /), or undefined when it is no data file. */
export function bundledKindOf(relativePath: string): DataFileKind | undefined {
  return KINDS.find(([re]) => re.test(relativePath))?.[1];
}

/** The checked files the build wrote: kind and text digest → the value as stored. */
export function checkedFileCache(): ReadonlyMap<string, Buffer> {
  return checkedFiles();
}

/** Build step: checks every file under mappings/ as what it is, and writes what it read for the next starts. */
export function writeCheckedFiles(kindOf: (relativePath: string) => DataFileKind | undefined = bundledKindOf): string {
  recording = new Map();
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const rel = path.relative(mappingsDir(), p).split(path.sep).join('/');
        const kind = kindOf(rel);
        if (kind) readDataFile(p, kind, `mappings/${rel}`);
      }
    }
  };
  walk(mappingsDir());
  const out = checkedFilesPath();
  writeDerivedFile(out, v8.serialize(recording), 'data-files-');
  recording = undefined;
  return out;
}

function parseAndCheck<T>(text: string, kind: DataFileKind, label: string): T {
  const { LineCounter, parseDocument } = yaml();
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length) {
    const e = doc.errors[0];
    throw new DataFileError(label, lineCounter.linePos(e.pos[0]).line, '', e.message.split('\n')[0]);
  }
  const value = doc.toJS() as unknown;
  const validate = validatorFor(kind);
  if (!validate(value)) {
    const errors = relevant(validate.errors ?? []);
    const first = errors[0];
    const keys = pathOf(first);
    // errors about the places that hold this one (the other branches of a oneOf) say nothing more
    const others = errors.filter((e) => e !== first && !keys.join('/').startsWith(pathOf(e).join('/')));
    const offset = offsetOf(doc.contents, keys);
    const more = others.length ? ` (and ${others.length} more)` : '';
    throw new DataFileError(label, offset === undefined ? undefined : lineCounter.linePos(offset).line, keys.join('.'), describe(first) + more);
  }
  return value as T;
}

/** The path in the document an error is about: for an unknown key (or a key no name fits), the key itself. */
function pathOf(e: ErrorObject): string[] {
  const keys = e.instancePath
    .split('/')
    .slice(1)
    .map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~'));
  const p = e.params as { additionalProperty?: string };
  if (e.keyword === 'additionalProperties' && p.additionalProperty !== undefined) keys.push(p.additionalProperty);
  else if (e.propertyName !== undefined) keys.push(e.propertyName);
  return keys;
}

/** Where in the text the node at `keys` starts (or the nearest node holding it): map keys by name, list items by index. */
function offsetOf(node: unknown, keys: string[]): number | undefined {
  let at = node as Node | null | undefined;
  let best = at?.range?.[0];
  for (const k of keys) {
    if (yaml().isMap(at)) {
      const pair = at.items.find((i) => String((i.key as { value?: unknown } | null)?.value ?? i.key) === k);
      if (!pair) break;
      best = (pair.key as Node | null)?.range?.[0] ?? best; // the key's line: where the reader looks
      at = pair.value as Node | null;
    } else if (yaml().isSeq(at) && /^\d+$/.test(k)) {
      at = at.items[Number(k)] as Node | null;
      best = at?.range?.[0] ?? best;
    } else break;
  }
  return best;
}

function describe(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  if (e.propertyName !== undefined) return `unknown key "${e.propertyName}"` + (e.keyword === 'enum' ? ` (known: ${(p.allowedValues as unknown[]).join(', ')})` : ` (${e.message ?? e.keyword})`);
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown key "${String(p.additionalProperty)}"`;
    case 'enum':
      return `must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'required':
      return `"${String(p.missingProperty)}" is required`;
    default:
      return e.message ?? e.keyword;
  }
}

/**
 * The errors worth showing: a value that fits none of a `oneOf`/`anyOf` gives one error per branch; the most specific
 * ones (deepest path; an unknown key or a wrong value before a missing one) say best what is wrong.
 */
function relevant(all: ErrorObject[]): ErrorObject[] {
  let errors = all;
  const rank = (e: ErrorObject): number => ({ additionalProperties: 0, enum: 1, type: 2, pattern: 2, required: 3 })[e.keyword as 'enum'] ?? 4;
  // a key no name fits is reported once, by the inner error that names it
  errors = errors.filter((e) => e.keyword !== 'propertyNames');
  const depth = (e: ErrorObject): number => pathOf(e).length;
  return [...errors].filter((e) => e.keyword !== 'oneOf' && e.keyword !== 'anyOf' && e.keyword !== 'if').sort((a, b) => depth(b) - depth(a) || rank(a) - rank(b));
}
