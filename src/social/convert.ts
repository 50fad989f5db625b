/**
 * One municipal social-care decision → checked values → a contribution to the person's shared care plan:
 * a ServiceRequest for the service (code from the social-services CodeSystem, period, amount and frequency,
 * requested by the municipality), the case worker as Practitioner and CareTeam member, caregivers as
 * RelatedPerson, and for a child the school and its special-needs coordinator.
 *
 * Every row is checked on its own; a bad row yields its errors (field + reason) and nothing else.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type {
  CodeableConcept,
  CodeSystem,
  ContactPoint,
  HumanName,
  Organization,
  Patient,
  Practitioner,
  RelatedPerson,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';
import { checkIsikukood, checkRegistryCode, CONFIDENTIALITY_SYSTEM, deterministicId, SYSTEMS } from '../fhir/identifiers.js';
import { patientIdFor } from '../mapping/hl7v2/ids.js';
import { mappingsDir } from '../paths.js';
import { EHAK_EXTENSIONS, municipalities, municipalityOrganization } from '../county/directory.js';
import { ROLES, role, type RoleCode } from '../county/roles.js';
import type { Contribution, TeamChange } from '../county/contribution.js';
import { PROFILE_BASE } from '../fhir/profiles.js';
import { fold, type Field, type SocialMapping } from './mapping.js';
import type { RawRecord } from './records.js';

export const SERVICES_SYSTEM = 'https://care-gateway.ee/fhir/CodeSystem/social-services';
export const DECISION_SYSTEM = 'https://care-gateway.ee/fhir/sid/social-decision';
const UCUM = 'http://unitsofmeasure.org';
const ROLE_CODE = 'http://terminology.hl7.org/CodeSystem/v3-RoleCode';

export interface RowError {
  row: number;
  at: string;
  field: Field | 'row';
  /** the export's column or JSON path the field comes from */
  column?: string;
  reason: string;
}

/** A decision whose every value has been checked. */
export interface Decision {
  row: number;
  at: string;
  decisionId: string;
  isikukood: string;
  birthDate: string;
  gender: 'male' | 'female';
  v: Partial<Record<Field, string>>;
  service: { code: string; display: string; displayEt?: string; confidentiality?: string };
  status: ServiceRequest['status'];
  start: string;
  end?: string;
  decisionDate?: string;
  amount?: number;
}

interface ServiceConcept {
  display: string;
  displayEt?: string;
  /** v3-Confidentiality label every decision for this service carries (CodeSystem property `confidentiality`) */
  confidentiality?: string;
}
let services: Map<string, ServiceConcept> | undefined;

/** The social services the project knows: the published CodeSystem in profiles/ is the one list. */
export function serviceCodes(): Map<string, ServiceConcept> {
  if (services) return services;
  const file = path.join(path.dirname(mappingsDir()), 'profiles', 'CodeSystem-social-services.json');
  const cs = JSON.parse(fs.readFileSync(file, 'utf8')) as CodeSystem;
  services = new Map(
    (cs.concept ?? []).map((c) => [
      c.code,
      {
        display: c.display ?? c.code,
        displayEt: c.designation?.find((d) => d.language === 'et')?.value,
        confidentiality: c.property?.find((p) => p.code === 'confidentiality')?.valueCode,
      },
    ]),
  );
  return services;
}

const UNITS: Record<string, { code: string; unit: string }> = {
  h: { code: 'h', unit: 'hours' },
  min: { code: 'min', unit: 'minutes' },
  d: { code: 'd', unit: 'days' },
  times: { code: '{times}', unit: 'times' },
  km: { code: 'km', unit: 'kilometres' },
};
const PERIODS = new Set(['d', 'wk', 'mo', 'a']);
const STATUSES = new Set(['draft', 'active', 'on-hold', 'revoked', 'completed', 'entered-in-error']);
const CASE_ROLES: Record<string, RoleCode> = {
  'social-worker': ROLES.socialWorker,
  'case-manager': ROLES.caseManager,
  'child-protection-specialist': ROLES.childProtection,
};

/** Reads a date in one of the mapping's formats; undefined when it is not a real date. */
export function parseDate(text: string, formats: string[]): string | undefined {
  for (const f of formats) {
    let m: RegExpExecArray | null = null;
    let y = 0;
    let mo = 0;
    let d = 0;
    if (f === 'dd.mm.yyyy' || f === 'd.m.yyyy') m = /^(\d{1,2})\.(\d{1,2})\.(\d{4})$/.exec(text);
    else if (f === 'dd/mm/yyyy') m = /^(\d{1,2})\/(\d{1,2})\/(\d{4})$/.exec(text);
    if (m) [d, mo, y] = [Number(m[1]), Number(m[2]), Number(m[3])];
    else if (f === 'yyyy-mm-dd' && (m = /^(\d{4})-(\d{2})-(\d{2})(?:T[\d:.]+(?:Z|[+-]\d{2}:\d{2})?)?$/.exec(text))) [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
    else if (f === 'yyyymmdd' && (m = /^(\d{4})(\d{2})(\d{2})$/.exec(text))) [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
    if (!m) continue;
    const dt = new Date(Date.UTC(y, mo - 1, d));
    if (dt.getUTCFullYear() !== y || dt.getUTCMonth() !== mo - 1 || dt.getUTCDate() !== d) return undefined;
    return `${String(y).padStart(4, '0')}-${String(mo).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
  }
  return undefined;
}

/** Reads a number, with a decimal comma when the mapping says so ("4,5"); spaces as thousands separators. */
export function parseNumber(text: string, decimalComma: boolean): number | undefined {
  let t = text.replace(/[\s\u00a0]/g, '');
  if (decimalComma) t = t.replace(/\./g, '').replace(',', '.');
  if (!/^-?\d+(\.\d+)?$/.test(t)) return undefined;
  return Number(t);
}

/** Checks one raw record; returns the decision, or every error found in it. */
export function checkRecord(mapping: SocialMapping, raw: RawRecord, today = new Date().toISOString().slice(0, 10)): { decision?: Decision; errors: RowError[] } {
  const errors: RowError[] = [];
  const v: Partial<Record<Field, string>> = {};
  const err = (field: Field | 'row', reason: string): void => {
    errors.push({ row: raw.row, at: raw.at, field, column: field === 'row' ? undefined : mapping.fields.get(field)?.from, reason });
  };
  for (const [field, rule] of mapping.fields) {
    const text = raw.values[field];
    if (text === undefined) {
      if (rule.required) err(field, 'required, but empty');
      continue;
    }
    if (text.includes('\ufffd')) {
      err(field, `not readable as ${mapping.encoding} (declare the export's encoding, e.g. windows-1257, in the mapping)`);
      continue;
    }
    if (rule.map) {
      const mapped = mapping.maps[rule.map].get(fold(text));
      if (mapped === undefined && !(field === 'service' && serviceCodes().has(text))) {
        err(field, `unknown value "${text}" (not in maps.${rule.map} of mapping ${mapping.source})`);
        continue;
      }
      v[field] = mapped ?? text;
    } else v[field] = text;
  }

  const ik = v.isikukood;
  let birthDate = '';
  let gender: 'male' | 'female' = 'female';
  if (ik) {
    const c = checkIsikukood(ik);
    if (!c.valid) err('isikukood', `not a valid isikukood: ${c.reason}`);
    else ({ birthDate, gender } = c as { birthDate: string; gender: 'male' | 'female' });
  }
  const dates: Partial<Record<Field, string>> = {};
  for (const f of ['start', 'end', 'decisionDate'] as const) {
    if (v[f] === undefined) continue;
    const d = parseDate(v[f]!, mapping.dateFormats);
    if (!d) err(f, `"${v[f]}" is not a date in ${mapping.dateFormats.join(' or ')}`);
    else dates[f] = d;
  }
  if (dates.start && dates.end && dates.end < dates.start) err('end', `the service ends (${dates.end}) before it starts (${dates.start})`);
  let amount: number | undefined;
  if (v.amount !== undefined) {
    amount = parseNumber(v.amount, mapping.decimalComma);
    if (amount === undefined || amount < 0) err('amount', `"${v.amount}" is not a number${mapping.decimalComma ? ' (decimal comma)' : ''}`);
  }
  const service = v.service ? serviceCodes().get(v.service) : undefined;
  if (v.service && !service) err('service', `maps.services gives "${v.service}", which is not a code of ${SERVICES_SYSTEM}`);
  if (v.unit && !UNITS[v.unit]) err('unit', `unit "${v.unit}" is not one of ${Object.keys(UNITS).join(', ')}`);
  if (v.per && !PERIODS.has(v.per)) err('per', `period "${v.per}" is not one of ${[...PERIODS].join(', ')}`);
  if (v.status && !STATUSES.has(v.status)) err('status', `status "${v.status}" is not a ServiceRequest status`);
  if (v['caseWorker.role'] && !CASE_ROLES[v['caseWorker.role']]) err('caseWorker.role', `role "${v['caseWorker.role']}" is not one of ${Object.keys(CASE_ROLES).join(', ')}`);
  for (const f of ['provider.registryCode', 'school.registryCode'] as const) {
    if (v[f] && !checkRegistryCode(v[f]!)) err(f, `"${v[f]}" is not a valid Business Register code`);
  }
  if (errors.length) return { errors };

  const end = dates.end;
  return {
    errors,
    decision: {
      row: raw.row,
      at: raw.at,
      decisionId: v.decisionId ?? compositeDecisionId(mapping, v, dates),
      isikukood: ik!,
      birthDate,
      gender,
      v,
      service: { code: v.service!, ...service! },
      // a decision whose service period is over is a completed activity of the plan
      status: (v.status as ServiceRequest['status']) ?? (end && end < today ? 'completed' : 'active'),
      start: dates.start!,
      end,
      decisionDate: dates.decisionDate,
      amount,
    },
  };
}

/**
 * The identifier of a decision an export does not number: a digest of the mapping's `decisionKey` fields as read
 * (dates normalised, services mapped), so the same decision in the next export is the same ServiceRequest. A digest,
 * not the values: an identifier is shown to everyone who sees the request, the isikukood must not be in it.
 */
function compositeDecisionId(mapping: SocialMapping, v: Partial<Record<Field, string>>, dates: Partial<Record<Field, string>>): string {
  const parts = (mapping.decisionKey ?? []).map((f) => dates[f] ?? (v[f] ?? '').trim().toLowerCase());
  return `K-${crypto.createHash('sha256').update(`${mapping.municipality.ehak}\u0000${parts.join('\u0000')}`).digest('hex').slice(0, 20)}`;
}

function humanName(text: string): HumanName {
  const parts = text.trim().split(/\s+/);
  return parts.length > 1 ? { text, family: parts[parts.length - 1], given: parts.slice(0, -1) } : { text, family: text };
}

function telecom(phone?: string, email?: string): ContactPoint[] | undefined {
  const t: ContactPoint[] = [];
  if (phone) t.push({ system: 'phone', value: phone, use: 'work' });
  if (email) t.push({ system: 'email', value: email, use: 'work' });
  return t.length ? t : undefined;
}

const ref = (r: Resource, display?: string) => ({ reference: `${r.resourceType}/${r.id}`, ...(display ? { display } : {}) });

function organization(name: string | undefined, registryCode: string | undefined, kind: string): Organization | undefined {
  if (!name && !registryCode) return undefined;
  return {
    resourceType: 'Organization',
    id: registryCode ? deterministicId('Organization', SYSTEMS.organisation, registryCode) : deterministicId('Organization', kind, name!),
    ...(registryCode ? { identifier: [{ system: SYSTEMS.organisation, value: registryCode }] } : {}),
    active: true,
    ...(name ? { name } : {}),
  };
}

/** The municipality as the Organization that decided (with its registry code and EHAK code). */
export function municipalityOf(mapping: SocialMapping): Organization {
  const m = municipalities().get(mapping.municipality.ehak)!;
  return municipalityOrganization({ ...m, registryCode: m.registryCode ?? mapping.municipality.registryCode });
}

/** What a checked decision contributes to the person's shared plan. */
export function contributionFor(mapping: SocialMapping, d: Decision, inboxId: string): Contribution {
  const { v } = d;
  const ehak = mapping.municipality.ehak;
  const municipality = municipalityOf(mapping);
  const patientId = patientIdFor(SYSTEMS.isikukood, d.isikukood);
  const name = v.givenName || v.familyName ? [{ use: 'official' as const, ...(v.familyName ? { family: v.familyName } : {}), ...(v.givenName ? { given: v.givenName.split(/\s+/) } : {}) }] : undefined;
  const patient: Patient = {
    resourceType: 'Patient',
    id: patientId,
    identifier: [{ system: SYSTEMS.isikukood, value: d.isikukood }],
    ...(name ? { name } : {}),
    gender: d.gender,
    birthDate: d.birthDate,
    // the municipality decides for its residents: the home address is in it (the text when the export has it)
    address: [
      {
        use: 'home',
        ...(v.address ? { text: v.address } : {}),
        district: mapping.municipality.name,
        country: 'EE',
        extension: [{ url: EHAK_EXTENSIONS[0], valueCoding: { system: SYSTEMS.ehak, code: ehak, display: mapping.municipality.name } }],
      },
    ],
  };
  const patientRef = { reference: `Patient/${patientId}` };
  const resources: Resource[] = [];
  const team: TeamChange[] = [];

  let caseWorker: Practitioner | undefined;
  if (v['caseWorker.name'] || v['caseWorker.id']) {
    const key = v['caseWorker.id'] ?? v['caseWorker.email'] ?? v['caseWorker.name']!;
    caseWorker = {
      resourceType: 'Practitioner',
      id: deterministicId('Practitioner', 'social', ehak, key),
      ...(v['caseWorker.id'] ? { identifier: [{ system: `https://care-gateway.ee/fhir/sid/case-worker/${ehak}`, value: v['caseWorker.id'] }] } : {}),
      active: true,
      ...(v['caseWorker.name'] ? { name: [humanName(v['caseWorker.name'])] } : {}),
      ...(telecom(v['caseWorker.phone'], v['caseWorker.email']) ? { telecom: telecom(v['caseWorker.phone'], v['caseWorker.email']) } : {}),
    };
    resources.push(caseWorker);
    team.push({ member: ref(caseWorker, v['caseWorker.name']), role: role(CASE_ROLES[v['caseWorker.role'] ?? 'social-worker']), onBehalfOf: ref(municipality), start: d.start });
  }

  const provider = organization(v['provider.name'], v['provider.registryCode'], 'social-service-provider');
  if (provider) resources.push(provider);

  if (v['supportPerson.name']) {
    const sp: Practitioner = {
      resourceType: 'Practitioner',
      id: deterministicId('Practitioner', 'support-person', ehak, d.decisionId, v['supportPerson.name']),
      active: true,
      name: [humanName(v['supportPerson.name'])],
      ...(telecom(v['supportPerson.phone']) ? { telecom: telecom(v['supportPerson.phone']) } : {}),
    };
    resources.push(sp);
    team.push({ member: ref(sp, v['supportPerson.name']), role: role(ROLES.supportPerson), onBehalfOf: ref(provider ?? municipality), start: d.start, end: d.end });
  }

  if (v['caregiver.name']) {
    const rel = v['caregiver.relationship'];
    const rp: RelatedPerson = {
      resourceType: 'RelatedPerson',
      id: deterministicId('RelatedPerson', patientId, v['caregiver.name']),
      active: true,
      patient: patientRef,
      relationship: [
        ...(rel ? [{ coding: [{ system: ROLE_CODE, code: rel }] }] : []),
        { coding: [{ system: 'http://snomed.info/sct', code: rel === 'GUARD' ? ROLES.legalGuardian.code : ROLES.caregiver.code, display: rel === 'GUARD' ? ROLES.legalGuardian.display : ROLES.caregiver.display }] },
      ],
      name: [humanName(v['caregiver.name'])],
      ...(telecom(v['caregiver.phone']) ? { telecom: telecom(v['caregiver.phone']) } : {}),
    };
    resources.push(rp);
  }

  if (v['school.name'] || v['school.registryCode']) {
    const school = organization(v['school.name'], v['school.registryCode'], 'school')!;
    school.type = [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/organization-type', code: 'edu', display: 'Educational Institute' }] }];
    resources.push(school);
    team.push({ member: ref(school, v['school.name']), role: role(ROLES.school), start: d.start, end: d.end });
    if (v['school.coordinatorName']) {
      const coord: Practitioner = {
        resourceType: 'Practitioner',
        id: deterministicId('Practitioner', 'school', school.id!, v['school.coordinatorName']),
        active: true,
        name: [humanName(v['school.coordinatorName'])],
        ...(telecom(v['school.coordinatorPhone'], v['school.coordinatorEmail']) ? { telecom: telecom(v['school.coordinatorPhone'], v['school.coordinatorEmail']) } : {}),
      };
      resources.push(coord);
      team.push({ member: ref(coord, v['school.coordinatorName']), role: role(ROLES.specialNeedsCoordinator), onBehalfOf: ref(school), start: d.start, end: d.end });
    }
  }

  const code: CodeableConcept = {
    coding: [{ system: SERVICES_SYSTEM, code: d.service.code, display: d.service.display }],
    text: d.service.displayEt ?? d.service.display,
  };
  const unit = v.unit ? UNITS[v.unit] : undefined;
  const period = { start: d.start, ...(d.end ? { end: d.end } : {}) };
  const sr: ServiceRequest = {
    resourceType: 'ServiceRequest',
    id: deterministicId('ServiceRequest', 'social-decision', ehak, d.decisionId),
    meta: {
      profile: [`${PROFILE_BASE}social-service-request`],
      // child protection and special welfare: restricted, seen only by callers cleared for it
      ...(d.service.confidentiality ? { security: [{ system: CONFIDENTIALITY_SYSTEM, code: d.service.confidentiality }] } : {}),
    },
    identifier: [{ system: `${DECISION_SYSTEM}/${ehak}`, value: d.decisionId }],
    status: d.status,
    intent: 'order',
    category: [{ coding: [{ system: 'http://snomed.info/sct', code: '410606002', display: 'Social service procedure' }] }],
    code,
    subject: patientRef,
    // "4.5 hours per week": the amount per period, within the decision's period
    ...(d.amount !== undefined && v.per
      ? { occurrenceTiming: { repeat: { boundsPeriod: period, frequency: 1, period: 1, periodUnit: v.per as 'd' | 'wk' | 'mo' | 'a' } } }
      : { occurrencePeriod: period }),
    ...(d.amount !== undefined ? { quantityQuantity: { value: d.amount, ...(unit ? { unit: unit.unit, system: UCUM, code: unit.code } : {}) } } : {}),
    ...(d.decisionDate ? { authoredOn: d.decisionDate } : {}),
    requester: ref(municipality, municipality.name),
    ...(provider ? { performer: [ref(provider, provider.name)] } : {}),
    ...(v.note ? { note: [{ text: v.note }] } : {}),
  };
  resources.push(sr);

  return {
    channel: 'social-care',
    inboxId,
    description: `social-care export ${mapping.source}, row ${d.row} (${d.at}), decision ${d.decisionId}`,
    organization: municipality,
    author: caseWorker ? ref(caseWorker, v['caseWorker.name']) : undefined,
    patient,
    patientStub: true,
    resources,
    event: 'service-decision',
    occurredAt: d.decisionDate ?? d.start,
    team,
  };
}
