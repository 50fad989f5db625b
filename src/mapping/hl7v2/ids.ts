/**
 * Identity in the HL7 v2 mapping: the Patient id from PID-3 (the isikukood first), ids of other resources from
 * their rule's recipe, and the Practitioners and Organizations a message names (one resource per identifier).
 */
import type { Identifier, Location, Organization, Practitioner, Reference } from '@medplum/fhirtypes';
import { issue } from '../../fhir/outcome.js';
import { SYSTEMS, checkIsikukood, deterministicId, maskIsikukood } from '../../fhir/identifiers.js';
import { municipalities, municipalityOrganization } from '../../county/directory.js';
import type { Hl7Repetition, Hl7Segment } from '../../hl7v2/message.js';
import { comp, cx, present } from '../datatypes.js';
import { parseLoc, read, type Ctx, type ResourceFile, type Scope } from './language.js';

/** The Patient id for an identifier list: the isikukood if any, else the first identifier with a system. */
export function patientId(list: Hl7Repetition[], ctx: Ctx, where: string): string | undefined {
  const ids = list.map((r) => cx(r, ctx)).filter((x): x is Identifier => !!x);
  for (const [i, id] of ids.entries()) {
    if (id.system !== SYSTEMS.isikukood) continue;
    const check = checkIsikukood(id.value ?? '');
    if (!check.valid) {
      ctx.issues.push(issue({ category: 'invalid', text: `${where}: isikukood ${maskIsikukood(id.value ?? '')} is not valid: ${check.reason}`, where: `${where}${i ? `[${i + 1}]` : ''}.1` }));
    }
  }
  const ni = ids.find((x) => x.system === SYSTEMS.isikukood);
  const chosen = ni ?? ids.find((x) => x.system) ?? ids[0];
  if (!chosen?.value) {
    ctx.issues.push(issue({ category: 'invalid', text: `${where}: no patient identifier`, where }));
    return undefined;
  }
  return patientIdFor(chosen.system ?? `urn:care-gateway:facility:${ctx.facility}`, chosen.value);
}

/** The id of the Patient with this identifier, whichever source names them (HL7 v2, FHIR, municipal files). */
export function patientIdFor(system: string, value: string): string {
  return deterministicId('Patient', system, value);
}

export function recipeId(rule: ResourceFile, scope: Scope, ctx: Ctx): string {
  // a key part `A|B` is the first of its locations that holds a value
  const keyVals = (rule.id?.key ?? []).map((k) => k.split('|').map((l) => read(scope, parseLoc(l))).find(present) ?? '').filter(present);
  const scopeParts = (s: 'patient' | 'facility' | undefined): string[] => (s === 'patient' ? [ctx.patientId ?? ''] : s === 'facility' ? [ctx.facility] : []);
  const within: string[] = [];
  if (rule.id?.within) {
    const before = [...scope.msg.segments.slice(0, scope.seg.index)].reverse().find((s) => s.name === rule.id!.within);
    if (before) within.push(before.fields.slice(1, 5).map((f) => f.map((r) => r.map((c) => c.join('&')).join('^')).join('~')).join('|'));
  }
  // `tag`: a fixed word that keeps two rules of one type apart (absent, the ids are as they always were)
  const tag = rule.id?.tag ? [rule.id.tag] : [];
  if (keyVals.length) return deterministicId(rule.resourceType, ...scopeParts(rule.id?.scope), ...tag, ...within, ...keyVals);
  const elseVals = (rule.id?.else ?? []).map((k) => read(scope, parseLoc(k))).filter(present);
  if (elseVals.length) return deterministicId(rule.resourceType, ...scopeParts(rule.id?.elseScope ?? rule.id?.scope), ...tag, ...elseVals);
  // a tag without key or else: one such resource per scope (one death certification per person)
  if (tag.length && !rule.id?.key && !rule.id?.else) return deterministicId(rule.resourceType, ...scopeParts(rule.id?.scope), ...tag);
  // nothing identifies it: the whole segment, within the patient
  const raw = scope.seg.fields.map((f) => f.map((r) => r.map((c) => c.join('&')).join('^')).join('~')).join('|');
  return deterministicId(rule.resourceType, ctx.patientId ?? '', scope.seg.name, raw);
}

export function senderOrganization(msh: Hl7Segment, ctx: Ctx): Organization | undefined {
  const name = comp(msh.fields[4]?.[0], 1);
  if (!present(name)) return undefined;
  const known = ctx.m.facilities.get(name.toUpperCase());
  const identifier: Identifier[] = known ? [{ system: SYSTEMS.organisation, value: known.registryCode }] : [];
  return {
    resourceType: 'Organization',
    id: deterministicId('Organization', ...(known ? [SYSTEMS.organisation, known.registryCode] : ['facility', name])),
    ...(identifier.length ? { identifier } : {}),
    name: known?.name ?? name,
    active: true,
  };
}

export function practitionerRef(parts: { identifier?: Identifier; name?: Practitioner['name'] extends (infer N)[] | undefined ? N : never }, ctx: Ctx): Reference {
  const key = parts.identifier?.value ? [parts.identifier.system ?? ctx.facility, parts.identifier.value] : ['name', JSON.stringify(parts.name)];
  const p: Practitioner = {
    resourceType: 'Practitioner',
    id: deterministicId('Practitioner', ...key),
    ...(parts.identifier ? { identifier: [parts.identifier] } : {}),
    ...(parts.name ? { name: [parts.name] } : {}),
  };
  if (!ctx.produced.some((r) => r.resourceType === 'Practitioner' && r.id === p.id)) ctx.produced.push(p);
  const display = parts.name ? [parts.name.prefix?.join(' '), parts.name.given?.join(' '), parts.name.family].filter(Boolean).join(' ') : undefined;
  return { reference: `Practitioner/${p.id}`, ...(display ? { display } : {}) };
}

export function organizationRef(parts: { identifier?: Identifier; name?: string }, ctx: Ctx): Reference {
  // a municipality (its registry code in the directory) is the municipality's own Organization: its worklist and
  // team membership are found by Organization/ehak-XXXX and its registry code
  if (parts.identifier?.system === SYSTEMS.organisation) {
    const m = [...municipalities().values()].find((x) => x.registryCode === parts.identifier!.value);
    if (m) {
      const o = municipalityOrganization(m);
      if (!ctx.produced.some((r) => r.resourceType === 'Organization' && r.id === o.id)) ctx.produced.push(o);
      return { reference: `Organization/${o.id}`, display: parts.name ?? m.name };
    }
  }
  const key = parts.identifier?.value ? [parts.identifier.system ?? '', parts.identifier.value] : ['name', parts.name ?? ''];
  const o: Organization = {
    resourceType: 'Organization',
    id: deterministicId('Organization', ...key),
    ...(parts.identifier ? { identifier: [parts.identifier] } : {}),
    ...(parts.name ? { name: parts.name } : {}),
  };
  if (!ctx.produced.some((r) => r.resourceType === 'Organization' && r.id === o.id)) ctx.produced.push(o);
  return { reference: `Organization/${o.id}`, ...(parts.name ? { display: parts.name } : {}) };
}


/** A place a message names (PL) → a Location of the sending facility, one per place, and a reference to it. */
export function locationRef(parts: { name: string; description: string; facility?: string; identifier?: string }, ctx: Ctx): Reference {
  const l: Location = {
    resourceType: 'Location',
    id: deterministicId('Location', ctx.facility, parts.facility ?? '', parts.identifier ?? parts.description),
    ...(parts.identifier ? { identifier: [{ value: parts.identifier }] } : {}),
    name: parts.name,
    ...(parts.description !== parts.name ? { description: parts.description } : {}),
    mode: 'instance',
  };
  if (!ctx.produced.some((r) => r.resourceType === 'Location' && r.id === l.id)) ctx.produced.push(l);
  return { reference: `Location/${l.id}`, display: parts.name };
}
