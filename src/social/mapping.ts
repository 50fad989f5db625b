/**
 * Municipal export mappings (mappings/social/{source}.yaml): where each field of a social-care decision comes
 * from in one municipality's export — a CSV column by its header, or a path into a JSON record — and how its
 * values read (service labels → project codes, date formats, decimal comma, encoding). Onboarding a
 * municipality is a new file here; mappings/social/README.md documents the format.
 */
import fs from 'node:fs';
import path from 'node:path';
import iconv from 'iconv-lite';
import { mappingsDir } from '../paths.js';
import { readDataFile } from '../data-file.js';
import { learnRegistryCode, municipalities } from '../county/directory.js';
import { checkRegistryCode } from '../fhir/identifiers.js';
import { OutcomeError } from '../fhir/outcome.js';

/** The fields a decision can carry: the import's target model. A mapping says where each one comes from. */
export const FIELDS = [
  'decisionId',
  'isikukood',
  'givenName',
  'familyName',
  'address',
  'service',
  'status',
  'decisionDate',
  'start',
  'end',
  'amount',
  'unit',
  'per',
  'note',
  'caseWorker.id',
  'caseWorker.name',
  'caseWorker.phone',
  'caseWorker.email',
  'caseWorker.role',
  'provider.name',
  'provider.registryCode',
  'supportPerson.name',
  'supportPerson.phone',
  'caregiver.name',
  'caregiver.relationship',
  'caregiver.phone',
  'school.name',
  'school.registryCode',
  'school.coordinatorName',
  'school.coordinatorPhone',
  'school.coordinatorEmail',
] as const;
export type Field = (typeof FIELDS)[number];

const REQUIRED: Field[] = ['decisionId', 'isikukood', 'service', 'start'];
const TYPES: Partial<Record<Field, 'date' | 'number'>> = { decisionDate: 'date', start: 'date', end: 'date', amount: 'number' };
/** value maps every mapping must be able to resolve for these fields (labels → project codes) */
const MAPPED: Partial<Record<Field, string>> = {
  service: 'services',
  status: 'statuses',
  unit: 'units',
  per: 'periods',
  'caseWorker.role': 'roles',
  'caregiver.relationship': 'relationships',
};

export interface FieldRule {
  field: Field;
  /** CSV header, or a dotted JSON path (`klient.isikukood`, `hooldajad[0].nimi`) */
  from?: string;
  /** a constant, when every row of this export has the same value */
  value?: string;
  required: boolean;
  type?: 'date' | 'number';
  /** name of the value map (under `maps:`) */
  map?: string;
}

export interface SocialMapping {
  source: string;
  file: string;
  description?: string;
  format: 'csv' | 'json';
  encoding: string;
  delimiter: string;
  /** JSON: the path to the array of decisions ('' = the document is the array) */
  records: string;
  dateFormats: string[];
  decimalComma: boolean;
  municipality: { ehak: string; name: string; registryCode?: string };
  fields: Map<Field, FieldRule>;
  /**
   * For exports without decision numbers: the fields that together identify a decision (e.g. isikukood, service and
   * start); the decision's identifier is derived from their values (`decisionKey` in the mapping file)
   */
  decisionKey?: Field[];
  /** value maps with keys folded (trimmed, lower case) */
  maps: Record<string, Map<string, string>>;
}

interface MappingFile {
  description?: string;
  format?: string;
  encoding?: string;
  delimiter?: string;
  records?: string;
  dateFormats?: string[];
  decimalComma?: boolean;
  municipality?: { ehak?: string; registryCode?: string | number };
  fields?: Record<string, string | { from?: string; value?: string | number; required?: boolean; map?: string }>;
  decisionKey?: string[];
  maps?: Record<string, Record<string, string>>;
}

const DATE_FORMATS = new Set(['dd.mm.yyyy', 'd.m.yyyy', 'yyyy-mm-dd', 'dd/mm/yyyy', 'yyyymmdd']);

export const fold = (s: string): string => s.trim().toLowerCase();

/** Compiles one mapping document; every problem names the file and the key. */
export function compileMapping(source: string, file: string, doc: MappingFile): SocialMapping {
  const bad = (msg: string): never => {
    throw new OutcomeError('fault', `mapping ${file}: ${msg}`);
  };
  if (!doc || typeof doc !== 'object') bad('not a YAML mapping');
  const format = (doc.format ?? 'csv').toLowerCase();
  if (format !== 'csv' && format !== 'json') bad(`format must be csv or json, got "${doc.format}"`);
  const encoding = (doc.encoding ?? 'utf-8').toLowerCase();
  if (!iconv.encodingExists(encoding)) bad(`unknown encoding "${doc.encoding}"`);
  const delimiter = doc.delimiter ?? ',';
  if ([...delimiter].length !== 1) bad(`delimiter must be one character, got "${delimiter}"`);
  const dateFormats = doc.dateFormats ?? ['dd.mm.yyyy', 'yyyy-mm-dd'];
  for (const f of dateFormats) if (!DATE_FORMATS.has(f)) bad(`date format "${f}" is not one of ${[...DATE_FORMATS].join(', ')}`);

  const ehak = String(doc.municipality?.ehak ?? '');
  const m = municipalities().get(ehak);
  if (!m) bad(`municipality.ehak "${ehak}" is not in mappings/directory/municipalities.yaml`);
  const registryCode = doc.municipality?.registryCode !== undefined ? String(doc.municipality.registryCode) : m!.registryCode;
  if (registryCode && !checkRegistryCode(registryCode)) bad(`municipality.registryCode "${registryCode}" fails the Business Register check digit`);

  const maps: Record<string, Map<string, string>> = {};
  for (const [name, entries] of Object.entries(doc.maps ?? {})) {
    maps[name] = new Map(Object.entries(entries ?? {}).map(([k, v]) => [fold(k), String(v)]));
  }

  const fields = new Map<Field, FieldRule>();
  for (const [key, spec] of Object.entries(doc.fields ?? {})) {
    if (!(FIELDS as readonly string[]).includes(key)) bad(`unknown field "${key}" (known: ${FIELDS.join(', ')})`);
    const field = key as Field;
    const s = typeof spec === 'string' ? { from: spec } : spec;
    if (!s.from && s.value === undefined) bad(`field ${key} needs "from" (a column or JSON path) or "value"`);
    const map = s.map ?? MAPPED[field];
    if (s.map && !maps[s.map]) bad(`field ${key} names map "${s.map}" which is not under maps:`);
    fields.set(field, {
      field,
      from: s.from,
      value: s.value === undefined ? undefined : String(s.value),
      required: REQUIRED.includes(field) || s.required === true,
      type: TYPES[field],
      map: map && maps[map] ? map : undefined,
    });
  }
  let decisionKey: Field[] | undefined;
  if (doc.decisionKey !== undefined) {
    if (!Array.isArray(doc.decisionKey) || doc.decisionKey.length === 0) bad('decisionKey must be a list of fields, e.g. [isikukood, service, start]');
    for (const k of doc.decisionKey) {
      if (!(FIELDS as readonly string[]).includes(k) || k === 'decisionId') bad(`decisionKey names "${k}", which is not a field (known: ${FIELDS.filter((f) => f !== 'decisionId').join(', ')})`);
      if (!fields.has(k as Field)) bad(`decisionKey names "${k}", which this mapping does not read (add it under fields:)`);
      fields.set(k as Field, { ...fields.get(k as Field)!, required: true });
    }
    if (fields.has('decisionId')) bad('a mapping names either a decisionId field or a decisionKey, not both');
    decisionKey = doc.decisionKey as Field[];
  }
  for (const f of REQUIRED) if (!fields.has(f) && !(f === 'decisionId' && decisionKey)) bad(`field ${f} is required in every mapping${f === 'decisionId' ? ' (or a decisionKey: the fields that together identify a decision)' : ''}`);
  if (!fields.get('service')?.map) bad('field service needs a value map (maps.services) from the export\'s labels to the project\'s service codes');

  if (registryCode) learnRegistryCode(ehak, registryCode);
  return {
    source,
    file,
    description: doc.description,
    format: format as 'csv' | 'json',
    encoding,
    delimiter,
    records: doc.records ?? '',
    dateFormats,
    decimalComma: doc.decimalComma ?? false,
    municipality: { ehak, name: m!.name, registryCode: registryCode || undefined },
    fields,
    ...(decisionKey ? { decisionKey } : {}),
    maps,
  };
}

/** Extra folder searched before mappings/social (SOCIAL_MAPPINGS_DIR), e.g. a deployment's own sources. */
let extraDir: string | undefined;
export function setSocialMappingsDir(dir: string | undefined): void {
  extraDir = dir;
  cache.clear();
}

const cache = new Map<string, SocialMapping>();
const SOURCE_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** The mapping for a source, or undefined when no file names it. */
export function socialMapping(source: string): SocialMapping | undefined {
  if (!SOURCE_NAME.test(source)) return undefined;
  const hit = cache.get(source);
  if (hit) return hit;
  for (const dir of [extraDir, path.join(mappingsDir(), 'social')]) {
    if (!dir) continue;
    for (const ext of ['.yaml', '.yml', '.json']) {
      const file = path.join(dir, source + ext);
      if (!fs.existsSync(file)) continue;
      let doc: MappingFile;
      try {
        doc = readDataFile<MappingFile>(file, 'social-source'); // JSON is YAML too
      } catch (e) {
        throw new OutcomeError('fault', `mapping ${(e as Error).message}`);
      }
      const compiled = compileMapping(source, file, doc);
      cache.set(source, compiled);
      return compiled;
    }
  }
  return undefined;
}

/** The source names that have a mapping (for error messages and the docs). */
export function socialSources(): string[] {
  const names = new Set<string>();
  for (const dir of [extraDir, path.join(mappingsDir(), 'social')]) {
    if (!dir || !fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir)) {
      const m = /^([a-z0-9][a-z0-9_-]*)\.(ya?ml|json)$/.exec(f);
      if (m) names.add(m[1]);
    }
  }
  return [...names].sort();
}
