/**
 * The municipality directory (mappings/directory/municipalities.yaml): EHAK code → local government, and
 * which municipality a person lives in, from the EHAK extension of their address, the municipality's name wherever the
 * address writes it, or a settlement that lies only in one municipality.
 *
 * @see https://fhir.ee/base — EE Base Address, extension ee-ehak (valueCoding, system https://fhir.ee/sid/ehak)
 */
import path from 'node:path';
import type { Address, Organization, Patient } from '@medplum/fhirtypes';
import { mappingsDir } from '../paths.js';
import { readDataFile } from '../data-file.js';

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
  /** settlements (villages, small boroughs) that lie only in it, as written without `küla`/`alevik` */
  settlements: string[];
}

let cache: Map<string, Municipality> | undefined;

function fold(s: string): string {
  return s.normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase().trim();
}

export function municipalities(): Map<string, Municipality> {
  if (cache) return cache;
  const doc = readDataFile<{
    municipalities: Record<string, { name: string; county: string; registryCode?: string; aliases?: string[]; settlements?: string[] }>;
  }>(path.join(mappingsDir(), 'directory/municipalities.yaml'), 'directory', 'mappings/directory/municipalities.yaml');
  cache = new Map(
    Object.entries(doc.municipalities).map(([ehak, m]) => [
      ehak,
      { ehak, name: m.name, county: m.county, registryCode: m.registryCode || undefined, aliases: m.aliases ?? [], settlements: m.settlements ?? [] },
    ]),
  );
  return cache;
}

/** A settlement's name as written in an address, without the kind that follows it (`Rõngu alevik` → `rõngu`). */
function settlementName(s: string): string {
  return fold(s).replace(/\s+(kula|alevik|alev|asula|linn)$/, '').trim();
}

/**
 * A municipality's Business Register code learned from its own export mapping (mappings/social/), when the
 * directory has none: the mapping is the municipality's own statement. A code in the directory wins.
 */
export function learnRegistryCode(ehak: string, registryCode: string): void {
  const m = municipalities().get(ehak);
  if (m && !m.registryCode) m.registryCode = registryCode;
}

/**
 * The municipality an address lies in, from every part that can carry it, strongest first: the EHAK code (the EE
 * Base extension; HL7 v2 XAD-9/10 become it), then the municipality's name or an alias (with or without
 * `vald`/`linn`, as the directory lists them) in `district`, `state` (XAD-4, where Estonian senders often write the
 * municipality) or `city`, then a settlement that lies only in one municipality, in `city`, `district` or an address
 * line. EHAK codes of settlements (four digits > 1000) are looked up among the directory's `settlementCodes`.
 */
export function municipalityOfAddress(a: Address): Municipality | undefined {
  const dir = municipalities();
  for (const ext of a.extension ?? []) {
    if (EHAK_EXTENSIONS.includes(ext.url) && ext.valueCoding?.code) {
      const m = dir.get(ext.valueCoding.code);
      if (m) return m;
    }
  }
  for (const candidate of [a.district, a.state, a.city].filter((x): x is string => !!x)) {
    const f = fold(candidate);
    for (const m of dir.values()) if (fold(m.name) === f || m.aliases.some((al) => fold(al) === f)) return m;
  }
  for (const candidate of [a.city, a.district, ...(a.line ?? []).flatMap((l) => l.split(','))].filter((x): x is string => !!x)) {
    const f = settlementName(candidate);
    if (!f) continue;
    for (const m of dir.values()) if (m.settlements.some((s) => settlementName(s) === f)) return m;
  }
  return undefined;
}

/** Does an address say where in Estonia it is but name no municipality the directory knows? */
export function unplacedEstonianAddress(a: Address): boolean {
  const estonian = !a.country || ['EE', 'EST', 'EESTI', 'ESTONIA'].includes(a.country.toUpperCase());
  const says = !!(a.city || a.district || a.state || a.line?.length || a.extension?.some((e) => EHAK_EXTENSIONS.includes(e.url)));
  return estonian && says && !municipalityOfAddress(a);
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
