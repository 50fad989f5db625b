/**
 * The municipality directory (mappings/directory/municipalities.yaml): EHAK code → local government, and
 * which municipality a person lives in, from the EHAK extension of their address or its district/city name.
 *
 * @see https://fhir.ee/base — EE Base Address, extension ee-ehak (valueCoding, system https://fhir.ee/sid/ehak)
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { Address, Organization, Patient } from '@medplum/fhirtypes';
import { mappingsDir } from '../mapping/files.js';

export const EHAK_SYSTEM = 'https://fhir.ee/sid/ehak';
export const BR_SYSTEM = 'https://fhir.ee/sid/org/est/br';
/** EE Base address extension carrying the EHAK code (both the v1.1+ and the older canonical are accepted). */
export const EHAK_EXTENSIONS = ['https://fhir.ee/base/StructureDefinition/ee-ehak', 'https://fhir.ee/StructureDefinition/ee-ehak'];

export interface Municipality {
  ehak: string;
  name: string;
  county: string;
  registryCode?: string;
  aliases: string[];
}

let cache: Map<string, Municipality> | undefined;

function fold(s: string): string {
  return s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase().trim();
}

export function municipalities(): Map<string, Municipality> {
  if (cache) return cache;
  const doc = YAML.parse(fs.readFileSync(path.join(mappingsDir(), 'directory/municipalities.yaml'), 'utf8')) as {
    municipalities: Record<string, { name: string; county: string; registryCode?: string; aliases?: string[] }>;
  };
  cache = new Map(
    Object.entries(doc.municipalities).map(([ehak, m]) => [
      ehak,
      { ehak, name: m.name, county: m.county, registryCode: m.registryCode || undefined, aliases: m.aliases ?? [] },
    ]),
  );
  return cache;
}

/**
 * A municipality's Business Register code learned from its own export mapping (mappings/social/), when the
 * directory has none: the mapping is the municipality's own statement. A code in the directory wins.
 */
export function learnRegistryCode(ehak: string, registryCode: string): void {
  const m = municipalities().get(ehak);
  if (m && !m.registryCode) m.registryCode = registryCode;
}

/** The municipality an address lies in: its EHAK extension first, else an exact (folded) name match. */
export function municipalityOfAddress(a: Address): Municipality | undefined {
  const dir = municipalities();
  for (const ext of a.extension ?? []) {
    if (EHAK_EXTENSIONS.includes(ext.url) && ext.valueCoding?.code) {
      const m = dir.get(ext.valueCoding.code);
      if (m) return m;
    }
  }
  for (const candidate of [a.district, a.city].filter((x): x is string => !!x)) {
    const f = fold(candidate);
    for (const m of dir.values()) if (fold(m.name) === f || m.aliases.some((al) => fold(al) === f)) return m;
  }
  return undefined;
}

/** The municipality of residence: the current home address (else any current address). */
export function municipalityOfResidence(p: Patient): Municipality | undefined {
  const current = (p.address ?? []).filter((a) => !a.period?.end && a.use !== 'old');
  const ordered = [...current.filter((a) => a.use === 'home'), ...current.filter((a) => a.use !== 'home')];
  for (const a of ordered) {
    const m = municipalityOfAddress(a);
    if (m) return m;
  }
  return undefined;
}

/** The municipality as an Organization resource, with a stable id derived from its EHAK code. */
export function municipalityOrganization(m: Municipality): Organization {
  const identifier = m.registryCode ? [{ system: BR_SYSTEM, value: m.registryCode }] : [];
  return {
    resourceType: 'Organization',
    id: `ehak-${m.ehak}`,
    identifier: [...identifier, { system: EHAK_SYSTEM, value: m.ehak }],
    active: true,
    type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/organization-type', code: 'govt', display: 'Government' }] }],
    name: m.name,
    address: [{ use: 'work', country: 'EE', extension: [{ url: EHAK_EXTENSIONS[0], valueCoding: { system: EHAK_SYSTEM, code: m.ehak, display: m.name } }] }],
  };
}
