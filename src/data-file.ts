/**
 * Reading the project's YAML data files (mappings/, and a site's folders beside them) checked against the JSON Schema
 * of their kind (mappings/schema/<kind>.schema.json). A typo — an unknown key, a value the code does not know, a
 * duplicate key, bad YAML — stops the start with the file, the line and the path in the file, not a stack trace
 * from somewhere later.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML, { LineCounter, isMap, isSeq, type Node } from 'yaml';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { mappingsDir } from './paths.js';

export type DataFileKind = 'hl7v2-common' | 'hl7v2-message' | 'hl7v2-resource' | 'codes' | 'facilities' | 'careplan-rules' | 'social-source' | 'directory' | 'fhir-message-events';

const validators = new Map<DataFileKind, ValidateFunction>();
let ajv: Ajv | undefined;

function validatorFor(kind: DataFileKind): ValidateFunction {
  let v = validators.get(kind);
  if (!v) {
    ajv ??= new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
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

export function parseDataFile<T>(text: string, kind: DataFileKind, label: string): T {
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
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
    if (isMap(at)) {
      const pair = at.items.find((i) => String((i.key as { value?: unknown } | null)?.value ?? i.key) === k);
      if (!pair) break;
      best = (pair.key as Node | null)?.range?.[0] ?? best; // the key's line: where the reader looks
      at = pair.value as Node | null;
    } else if (isSeq(at) && /^\d+$/.test(k)) {
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
