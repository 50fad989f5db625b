/**
 * Code tables as data (mappings/codes/*.yaml): an HL7 v2 table's codes → the codes of a FHIR ValueSet, one file
 * per target ValueSet. An unmapped code is never dropped silently: the caller keeps it with its v2 table system
 * and reports a warning.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { Coding } from '@medplum/fhirtypes';
import { mappingsDir } from '../paths.js';

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

export function loadCodeTables(dir = path.join(mappingsDir(), 'codes')): CodeTables {
  const tables = new Map<string, { file: TableFile; map: Map<string, Coding> }>();
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.yaml'))) {
    const file = YAML.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as TableFile;
    if (!file.valueSet || !file.system || !file.map) throw new Error(`mappings/codes/${f}: needs valueSet, system and map`);
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
