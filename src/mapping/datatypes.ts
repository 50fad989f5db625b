/**
 * HL7 v2 datatypes → FHIR datatypes, following the HL7 V2-to-FHIR IG datatype maps: CX[Identifier],
 * XPN[HumanName], XAD[Address], XTN[ContactPoint], CWE[CodeableConcept], XCN/XON (people and organisations),
 * DTM/TS → date, dateTime, instant (time zones kept; a time without an offset gets the configured zone).
 * Component positions are 1-based as in the standard. Values are already escape-decoded (parse.ts).
 *
 * @see https://build.fhir.org/ig/HL7/v2-to-fhir/datatype_maps.html
 */
import path from 'node:path';
import { mappingsDir } from '../paths.js';
import { readDataFile } from '../data-file.js';
import type { Address, CodeableConcept, Coding, ContactPoint, HumanName, Identifier } from '@medplum/fhirtypes';
import type { Hl7Repetition } from '../hl7v2/message.js';
import { canonicalSystem, SYSTEMS } from '../fhir/identifiers.js';
import type { CodeTables } from './codes.js';

/** Component n (1-based), first subcomponent. */
export const comp = (r: Hl7Repetition | undefined, n: number, sub = 1): string => (r?.[n - 1]?.[sub - 1] ?? '').trim();

/** HL7's explicit null `""` means "delete this value"; we treat it as empty. */
export const present = (v: string): boolean => v !== '' && v !== '""';

/** Coding system names → URIs (mappings/hl7v2/common.yaml `codingSystems`), set when the mappings load. */
let namedSystems: Record<string, string> | undefined;
const upperKeys = (m: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(m).map(([k, v]) => [k.toUpperCase(), v]));
export function setCodingSystems(systems: Record<string, string>): void {
  namedSystems = upperKeys(systems);
  systemCache.clear();
}

/** A coding system name (CWE-3) → URI: known names, HL7 tables (HL70001 → v2-0001), OIDs; else a local urn. */
const systemCache = new Map<string, string | undefined>();

export function codingSystem(name: string): string | undefined {
  if (!present(name)) return undefined;
  if (systemCache.has(name)) return systemCache.get(name);
  const v = codingSystemUncached(name);
  if (systemCache.size < 10_000) systemCache.set(name, v);
  return v;
}

function codingSystemUncached(name: string): string | undefined {
  const up = name.toUpperCase();
  namedSystems ??= upperKeys(readDataFile<{ codingSystems: Record<string, string> }>(path.join(mappingsDir(), 'hl7v2', 'common.yaml'), 'hl7v2-common', 'mappings/hl7v2/common.yaml').codingSystems);
  if (namedSystems[up]) return namedSystems[up];
  const table = /^HL7(\d{4})$/.exec(up);
  if (table) return `http://terminology.hl7.org/CodeSystem/v2-${table[1]}`;
  if (/^\d+(\.\d+)+$/.test(name)) return `urn:oid:${name}`;
  if (/^(https?|urn):/.test(name)) return name;
  return `urn:care-gateway:coding-system:${encodeURIComponent(name)}`;
}

/** CWE/CE/CNE → CodeableConcept (identifier ^ text ^ coding system ^ alternate identifier ^ alternate text ^ alternate system; CWE-9 original text). */
export function cwe(r: Hl7Repetition | undefined): CodeableConcept | undefined {
  if (!r) return undefined;
  const coding: Coding[] = [];
  for (let c = 1; c <= 4; c += 3) {
    const t = c + 1;
    const s = c + 2;
    const code = comp(r, c);
    if (!present(code)) continue;
    const system = codingSystem(comp(r, s));
    const display = comp(r, t);
    // properties set one by one (no spread of temporary objects: this runs for every coded field)
    const one: Coding = {};
    if (system) one.system = system;
    one.code = code;
    if (present(display)) one.display = display;
    coding.push(one);
  }
  const text = present(comp(r, 9)) ? comp(r, 9) : present(comp(r, 2)) ? comp(r, 2) : undefined;
  if (!coding.length && !text) return undefined;
  const cc: CodeableConcept = {};
  if (coding.length) cc.coding = coding;
  if (text) cc.text = text;
  return cc;
}

export interface IdentifierContext {
  /** facility name (MSH-4.1 / CX-4.1) → registry code, for hospital record numbers */
  registryCodeOf(name: string): string | undefined;
  codes: CodeTables;
}

/** The system URI for an assigning authority (HD: namespace ^ universal id ^ universal id type). */
export function authoritySystem(ns: string, uid: string, uidType: string, idType: string, ctx: IdentifierContext): string | undefined {
  if ((ns === 'EE' || ns === 'EST' || uid === '1.3.6.1.4.1.28284.6.2.2.1') && (idType === 'NI' || idType === 'NNEST' || idType === 'PI' || idType === '')) {
    return SYSTEMS.isikukood;
  }
  if (idType === 'MR' || idType === 'PI' || idType === 'PN') {
    const reg = ctx.registryCodeOf(ns) ?? ctx.registryCodeOf(uid);
    if (reg) return `${SYSTEMS.patientRecordNumber}/${reg}`;
  }
  if (present(uid) && /^(ISO|OID)$/i.test(uidType) && /^\d+(\.\d+)+$/.test(uid)) return `urn:oid:${uid}`;
  if (present(uid) && /^(URI|URL)$/i.test(uidType)) return canonicalSystem(uid);
  if (present(uid) && /^[0-9a-f-]{36}$/i.test(uid) && /^(UUID|GUID)$/i.test(uidType)) return `urn:uuid:${uid}`;
  if (present(ns)) return `urn:care-gateway:assigner:${encodeURIComponent(ns)}`;
  return undefined;
}

/** CX → Identifier: id ^ check digit ^ scheme ^ assigning authority (HD) ^ identifier type (0203) ^ facility ^ effective ^ expiration. */
export function cx(r: Hl7Repetition | undefined, ctx: IdentifierContext): Identifier | undefined {
  const value = comp(r, 1);
  if (!r || !present(value)) return undefined;
  const idType = comp(r, 5);
  const system = authoritySystem(comp(r, 4, 1), comp(r, 4, 2), comp(r, 4, 3), idType, ctx);
  const type = present(idType) ? ctx.codes.lookup('identifier-type', idType) : undefined;
  const start = dtm(comp(r, 7), 'date');
  const end = dtm(comp(r, 8), 'date');
  return {
    ...(type ? { type: { coding: [type] } } : {}),
    ...(system ? { system } : {}),
    value,
    ...(start || end ? { period: { ...(start ? { start } : {}), ...(end ? { end } : {}) } } : {}),
    ...(present(comp(r, 4, 1)) && !system?.startsWith('https://fhir.ee') ? { assigner: { display: comp(r, 4, 1) } } : {}),
  };
}

/** XPN → HumanName: family (1.1) ^ given ^ further given ^ suffix ^ prefix ^ degree ^ name type (0200). */
export function xpn(r: Hl7Repetition | undefined, ctx: IdentifierContext): HumanName | undefined {
  if (!r) return undefined;
  const family = comp(r, 1, 1);
  const given = [comp(r, 2), ...comp(r, 3).split(' ')].filter(present);
  const prefix = [comp(r, 5)].filter(present);
  const suffix = [comp(r, 4), comp(r, 6)].filter(present);
  if (!present(family) && !given.length) return undefined;
  const use = present(comp(r, 7)) ? ctx.codes.lookup('name-use', comp(r, 7))?.code : undefined;
  return {
    ...(use ? { use: use as HumanName['use'] } : {}),
    ...(present(family) ? { family } : {}),
    ...(given.length ? { given } : {}),
    ...(prefix.length ? { prefix } : {}),
    ...(suffix.length ? { suffix } : {}),
  };
}

/**
 * XAD → Address: street ^ other ^ city ^ state ^ zip ^ country ^ type (0190) ^ other geographic ^ county/parish code ^
 * … ^ validity range (12, DR) ^ effective (13) ^ expiration (14) ^ … ^ addressee (19). IG XAD[Address]: XAD-1 and XAD-2
 * are the first lines, XAD-19 (the addressee, "c/o …") the line after them; XAD-12…14 the period.
 */
export function xad(r: Hl7Repetition | undefined, ctx: IdentifierContext): Address | undefined {
  if (!r) return undefined;
  // XAD-1 (SAD): the street address, or its parts — street name (2) and dwelling number (3); the parts make the line
  // when the first component does not already hold them ("1000&Hospital Lane" → "1000 Hospital Lane")
  // a part already written in the line (as a whole word or words) is not written twice ("Tartu mnt 1&Tartu mnt&1")
  let street = '';
  for (const part of [comp(r, 1, 1), comp(r, 1, 2), comp(r, 1, 3)].filter(present)) {
    if (!` ${street} `.includes(` ${part} `)) street = street ? `${street} ${part}` : part;
  }
  const line = [street, comp(r, 2), comp(r, 19)].filter(present);
  const city = comp(r, 3);
  const state = comp(r, 4);
  const postalCode = comp(r, 5);
  const country = comp(r, 6);
  const district = comp(r, 9);
  if (!line.length && !present(city) && !present(postalCode) && !present(state) && !present(country)) return undefined;
  const type = present(comp(r, 7)) ? ctx.codes.lookup('address-use', comp(r, 7))?.code : undefined;
  const start = dtm(comp(r, 13), 'dateTime') ?? dtm(comp(r, 12, 1), 'dateTime');
  const end = dtm(comp(r, 14), 'dateTime') ?? dtm(comp(r, 12, 2), 'dateTime');
  const a: Address = {
    ...(type === 'home' || type === 'work' || type === 'temp' || type === 'old' ? { use: type } : {}),
    ...(type === 'postal' || type === 'physical' ? { type } : {}),
    ...(line.length ? { line } : {}),
    ...(present(city) ? { city } : {}),
    ...(present(district) ? { district } : {}),
    ...(present(state) ? { state } : {}),
    ...(present(postalCode) ? { postalCode } : {}),
    ...(present(country) ? { country } : {}),
    ...(start || end ? { period: { ...(start ? { start } : {}), ...(end ? { end } : {}) } } : {}),
  };
  // An EHAK code in XAD-9 (county/parish) or XAD-10 (census tract) when the sender is Estonian (4-digit codes)
  for (const n of [9, 10]) {
    const code = comp(r, n);
    if (/^\d{4}$/.test(code) && (country === 'EE' || country === 'EST' || country === '')) {
      a.extension = [{ url: 'https://fhir.ee/base/StructureDefinition/ee-ehak', valueCoding: { system: SYSTEMS.ehak, code } }];
      if (n === 9) delete a.district;
      break;
    }
  }
  return a;
}

/** XTN → ContactPoint: (v2.5+) 3 equipment type, 4 e-mail, 6 area, 7 local number, 12 unformatted; (older) 1 the number. */
export function xtn(r: Hl7Repetition | undefined, use?: ContactPoint['use']): ContactPoint | undefined {
  if (!r) return undefined;
  const equipment = comp(r, 3).toUpperCase();
  const email = comp(r, 4);
  const useCode = comp(r, 2).toUpperCase();
  // XTN-4 is an address only on Internet / X.400 equipment (or, with no equipment type, when it looks like one);
  // senders put other things there (a phone extension), which must not become an e-mail address
  if (equipment === 'INTERNET' || equipment === 'X.400' || (!present(equipment) && (email.includes('@') || /^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(comp(r, 1))))) {
    const value = present(email) ? email : comp(r, 1);
    return present(value) ? { system: 'email', value, ...(use ? { use } : {}) } : undefined;
  }
  const local = [comp(r, 5) ? `+${comp(r, 5)}` : '', comp(r, 6), comp(r, 7)].filter(present).join(' ');
  const value = present(comp(r, 12)) ? comp(r, 12) : present(comp(r, 1)) ? comp(r, 1) : local;
  if (!present(value)) return undefined;
  const system: ContactPoint['system'] = equipment === 'FX' ? 'fax' : equipment === 'BP' ? 'pager' : 'phone';
  const u: ContactPoint['use'] | undefined = equipment === 'CP' ? 'mobile' : useCode === 'WPN' ? 'work' : useCode === 'PRN' ? 'home' : use;
  return { system, value, ...(u ? { use: u } : {}) };
}

/** XCN person: id ^ family ^ given ^ further given ^ suffix ^ prefix ^ degree ^ source table ^ assigning authority (9) ^ … type (13). */
export function xcnParts(r: Hl7Repetition | undefined, ctx: IdentifierContext): { identifier?: Identifier; name?: HumanName } | undefined {
  if (!r) return undefined;
  const id = comp(r, 1);
  const family = comp(r, 2, 1);
  const given = [comp(r, 3), comp(r, 4)].filter(present);
  if (!present(id) && !present(family)) return undefined;
  let identifier: Identifier | undefined;
  if (present(id)) {
    const ns = comp(r, 9, 1);
    const uid = comp(r, 9, 2);
    // Estonian professional codes (D12345 doctor, N12345 nurse) and the TAM/MEDRE authority
    const looksEstonian = /^[DNMAPS]\d{5}$/.test(id) || /^(TAM|MEDRE|EE)$/i.test(ns);
    const system = looksEstonian ? SYSTEMS.professional : authoritySystem(ns, uid, comp(r, 9, 3), comp(r, 13), ctx);
    identifier = { ...(system ? { system } : {}), value: id };
  }
  const prefix = [comp(r, 6)].filter(present);
  const name: HumanName | undefined =
    present(family) || given.length ? { ...(present(family) ? { family } : {}), ...(given.length ? { given } : {}), ...(prefix.length ? { prefix } : {}) } : undefined;
  return { identifier, name };
}

/**
 * NDL (OBR-32…35): the person is component 1, a CNN written in subcomponents — id & family & given & second given &
 * suffix & prefix & degree & source table & assigning authority; the rest (period, place) is not the person.
 */
export function ndlParts(r: Hl7Repetition | undefined, ctx: IdentifierContext): { identifier?: Identifier; name?: HumanName } | undefined {
  const cnn = r?.[0];
  return cnn ? xcnParts([[cnn[0] ?? ''], [cnn[1] ?? ''], [cnn[2] ?? ''], [cnn[3] ?? ''], [cnn[4] ?? ''], [cnn[5] ?? ''], [cnn[6] ?? ''], [cnn[7] ?? ''], [cnn[8] ?? '']], ctx) : undefined;
}

/** XON organisation: name ^ type ^ id (3, older) ^ … ^ assigning authority (6) ^ … ^ organisation identifier (10). */
export function xonParts(r: Hl7Repetition | undefined, ctx: IdentifierContext): { identifier?: Identifier; name?: string } | undefined {
  if (!r) return undefined;
  const name = comp(r, 1);
  const id = present(comp(r, 10)) ? comp(r, 10) : comp(r, 3);
  if (!present(name) && !present(id)) return undefined;
  let identifier: Identifier | undefined;
  if (present(id)) {
    const reg = /^\d{8}$/.test(id) ? id : ctx.registryCodeOf(name);
    identifier = reg ? { system: SYSTEMS.organisation, value: reg } : { system: authoritySystem(comp(r, 6, 1), comp(r, 6, 2), comp(r, 6, 3), '', ctx), value: id };
    if (!identifier.system) delete identifier.system;
  } else {
    const reg = ctx.registryCodeOf(name);
    if (reg) identifier = { system: SYSTEMS.organisation, value: reg };
  }
  return { identifier, ...(present(name) ? { name } : {}) };
}

/**
 * PL person location: point of care ^ room ^ bed ^ facility (HD) ^ status ^ person location type ^ building ^ floor ^
 * description (9) ^ comprehensive location identifier (10, EI) ^ assigning facility (11). The name is the most general
 * unit the sender named (the point of care, else the room, the bed, the building); every unit is kept in the
 * description, so nothing the sender wrote is lost.
 */
export function plParts(r: Hl7Repetition | undefined): { name: string; description: string; facility?: string; identifier?: string } | undefined {
  if (!r) return undefined;
  const units = [comp(r, 1), comp(r, 2), comp(r, 3), comp(r, 7), comp(r, 8)];
  const facility = comp(r, 4, 1);
  const name = units.find(present) ?? (present(comp(r, 9)) ? comp(r, 9) : undefined);
  if (!name) return undefined;
  const description = [...units, facility, comp(r, 9)].filter(present).join(', ');
  const identifier = comp(r, 10, 1);
  return { name, description, ...(present(facility) ? { facility } : {}), ...(present(identifier) ? { identifier } : {}) };
}

let defaultZone = 'Europe/Tallinn';
const offsetFormatters = new Map<string, Intl.DateTimeFormat>();

/** Sets the zone for v2 timestamps that carry no offset (from config; Estonian senders use local time). */
export function setDefaultZone(zone: string): void {
  new Intl.DateTimeFormat('en-US', { timeZone: zone }); // throws RangeError for an unknown zone, at start
  defaultZone = zone;
}

/** The UTC offset (+02:00 / +03:00) of the default zone at a local wall-clock time. */
const offsetCache = new Map<string, string>();

function zoneOffset(y: number, mo: number, d: number, h: number, mi: number): string {
  // offsets change at most twice a year, on the hour: cache per zone and local hour
  const key = `${defaultZone}|${y}-${mo}-${d}T${h}`;
  let hit = offsetCache.get(key);
  if (hit === undefined) {
    hit = computeOffset(y, mo, d, h, mi);
    if (offsetCache.size > 50_000) offsetCache.clear();
    offsetCache.set(key, hit);
  }
  return hit;
}

function computeOffset(y: number, mo: number, d: number, h: number, mi: number): string {
  let f = offsetFormatters.get(defaultZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: defaultZone, timeZoneName: 'longOffset' });
    offsetFormatters.set(defaultZone, f);
  }
  const guess = Date.UTC(y, mo - 1, d, h, mi) - 2 * 3_600_000;
  const name = f.formatToParts(new Date(guess)).find((p) => p.type === 'timeZoneName')?.value ?? 'GMT';
  const m = /GMT([+-]\d{2}):?(\d{2})?/.exec(name);
  return m ? `${m[1]}:${m[2] ?? '00'}` : '+00:00';
}

/**
 * DTM/TS text → FHIR: `date` keeps the precision given (YYYY, YYYY-MM, YYYY-MM-DD); `dateTime` adds the time
 * with its offset (the sender's, else the default zone's); `instant` needs seconds. Read from the raw text
 * (seconds and fractions are never dropped). Returns undefined for text that is not a timestamp.
 */
export function dtm(text: string, kind: 'date' | 'dateTime' | 'instant'): string | undefined {
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{2}(?:\d{2})?)?$/.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  if (mo && (Number(mo) < 1 || Number(mo) > 12)) return undefined;
  if (d && (Number(d) < 1 || Number(d) > 31)) return undefined;
  const date = [y, mo, d].filter(Boolean).join('-');
  if (kind === 'date' || !h) return kind === 'instant' ? undefined : date;
  if (!d) return date;
  const offset = tz ? `${tz.slice(0, 3)}:${tz.slice(3, 5) || '00'}` : zoneOffset(Number(y), Number(mo), Number(d), Number(h), Number(mi ?? 0));
  const time = `${h}:${mi ?? '00'}:${s ?? '00'}${frac ? `.${frac}` : ''}`;
  return `${date}T${time}${offset}`;
}
