/**
 * Code tables as data (mappings/codes/*.yaml): an HL7 v2 table's codes → the codes of a FHIR ValueSet, one file
 * per target ValueSet. An unmapped code is never dropped silently: the caller keeps it with its v2 table system
 * and reports a warning.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Coding } from '@medplum/fhirtypes';
import { mappingsDir } from '../paths.js';
import { readDataFile } from '../data-file.js';

interface TableFile {
  valueSet: string;
  system: string;
  sourceTable?: string;
  /** unknown codes are kept as they are (in `system`) rather than reported */
  passThrough?: boolean;
  map: Record<string, string | { code: string; display?: string; system?: string }>;
}

export interface CodeTables {
  /** The FHIR coding for a v2 code in the named table, or undefined when the table has no mapping for it. */
  lookup(valueSet: string, code: string): Coding | undefined;
  /** the v2 table a value set is mapped from (for unmapped codes: http://terminology.hl7.org/CodeSystem/v2-NNNN) */
  sourceSystem(valueSet: string): string | undefined;
}

/**
 * The code tables of the given folders, each file checked against mappings/schema/codes.schema.json; a table of a
 * later folder (a site's) replaces the project's table of the same value set.
 */
export function loadCodeTables(...dirs: string[]): CodeTables {
  if (dirs.length === 0) dirs = [path.join(mappingsDir(), 'codes')];
  const tables = new Map<string, { file: TableFile; map: Map<string, Coding> }>();
  for (const [dir, f] of dirs.filter((d) => fs.existsSync(d)).flatMap((d) => fs.readdirSync(d).filter((x) => x.endsWith('.yaml')).sort().map((x) => [d, x]))) {
    const file = readDataFile<TableFile>(path.join(dir, f), 'codes', path.join(path.basename(dir), f));
    const map = new Map<string, Coding>();
    for (const [k, v] of Object.entries(file.map)) {
      map.set(k.toUpperCase(), typeof v === 'string' ? { system: file.system, code: v } : { system: v.system ?? file.system, code: v.code, ...(v.display ? { display: v.display } : {}) });
    }
    tables.set(file.valueSet, { file, map });
  }
  return {
    lookup(valueSet, code) {
      const t = tables.get(valueSet);
      if (!t) throw new Error(`no code table for value set ${valueSet}`);
      const hit = t.map.get(code.trim().toUpperCase());
      if (hit) return hit;
      return t.file.passThrough ? { system: t.file.system, code } : undefined;
    },
    sourceSystem(valueSet) {
      const t = tables.get(valueSet)?.file.sourceTable;
      return t ? `http://terminology.hl7.org/CodeSystem/v2-${t}` : undefined;
    },
  };
}
