/**
 * The parts of the HL7 v2 mapping that are more than field-to-element: OBX-5 by its value type, PRD providers
 * (people or organisations), ROL care-team roles, and the MDM document body. Each is named from a rule file
 * (`valueType`, `provider`, `role`, `document`), so which segments use them stays data.
 */
import type { Attachment, Reference } from '@medplum/fhirtypes';
import type { Hl7Repetition } from '../../hl7v2/message.js';
import { issue } from '../../fhir/outcome.js';
import { SYSTEMS, checkRegistryCode } from '../../fhir/identifiers.js';
import type { TeamChange } from '../../county/contribution.js';
import { ROLES, role as roleOf } from '../../county/roles.js';
import { comp, cwe, dtm, present, xcnParts, xonParts, xpn } from '../datatypes.js';
import { parseLoc, read, reps, type Ctx, type ElementSpec, type ResourceFile, type Scope } from './language.js';
import { organizationRef, practitionerRef } from './ids.js';

/** OBX-2 types whose OBX-5 repetitions are separate values; the repetitions of text (TX, FT, ST …) are its lines. */
const SEPARATE = new Set(['NM', 'SN', 'CWE', 'CE', 'CNE', 'DT', 'TS', 'DTM', 'TM']);

/**
 * OBX-5 by OBX-2 → Observation.value[x]. With `components` (a location: OBX-3), a repeated OBX-5 becomes one
 * Observation.component per repetition, each coded by that location and holding one value — the IG's ORU_R01 map:
 * "when OBX-5 repeats, the standard mapping is to use Observation.component" (OBX[Observation-Component]).
 */
export function observationValue(spec: ElementSpec, scope: Scope, ctx: Ctx): [string, unknown] {
  const type = read(scope, parseLoc(spec.valueType!)).toUpperCase();
  const loc = parseLoc(spec.from ?? 'OBX-5');
  const values = reps(scope, loc);
  const valued = values.filter((r) => carries(type, r));
  if (spec.components && SEPARATE.has(type) && valued.length > 1) {
    const code = cwe(reps(scope, parseLoc(spec.components))[0]) ?? { text: 'not coded by the sender' };
    const component = valued.flatMap((r) => {
      const [key, v] = oneValue(type, r, values, spec, scope, ctx);
      return v === undefined ? [] : [{ code: structuredClone(code), [key]: v }];
    });
    return component.length ? ['component', component] : ['value', undefined];
  }
  const first = values[0];
  if (!first || !carries(type, first)) return ['value', undefined];
  if (valued.length > 1 && SEPARATE.has(type)) ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: ${valued.length} values; the first is used`, where: loc.text }));
  return oneValue(type, first, values, spec, scope, ctx);
}

/** Whether a repetition holds a value: a coded value may carry only an alternate code; a structured numeric's first
 * component is its comparator, often empty ("^182" is 182). */
function carries(type: string, r: Hl7Repetition): boolean {
  if (type === 'CWE' || type === 'CE' || type === 'CNE') return r.some((c) => c.some(present));
  return type === 'SN' ? present(comp(r, 1)) || present(comp(r, 2)) : present(comp(r, 1));
}

/** One OBX-5 repetition as value[x] (`all`: every repetition, for the text types that join them). */
function oneValue(type: string, first: Hl7Repetition, all: Hl7Repetition[], spec: ElementSpec, scope: Scope, ctx: Ctx): [string, unknown] {
  const loc = parseLoc(spec.from ?? 'OBX-5');
  const text = comp(first, 1);
  switch (type) {
    case 'NM': {
      if (!/^[-+]?\d+(\.\d+)?$/.test(text)) return ['valueString', text];
      return ['valueQuantity', { value: Number(text), ...unitOf(spec, scope) }];
    }
    case 'SN': {
      const [cmp, n1, sep, n2] = [comp(first, 1), comp(first, 2), comp(first, 3), comp(first, 4)];
      if (sep === '-' && present(n1) && present(n2)) return ['valueRange', { low: { value: Number(n1) }, high: { value: Number(n2) } }];
      if ((sep === ':' || sep === '/') && present(n1) && present(n2)) return ['valueRatio', { numerator: { value: Number(n1) }, denominator: { value: Number(n2) } }];
      const comparator = ['<', '<=', '>', '>='].includes(cmp) ? cmp : undefined;
      // IG SN[Quantity]: the number with OBX-6 as its unit
      return present(n1) && /^[-+]?\d+(\.\d+)?$/.test(n1) ? ['valueQuantity', { value: Number(n1), ...(comparator ? { comparator } : {}), ...unitOf(spec, scope) }] : ['value', undefined];
    }
    case 'CWE':
    case 'CE':
    case 'CNE':
      return ['valueCodeableConcept', cwe(first)];
    case 'DT':
      return ['valueDateTime', dtm(text, 'date')];
    case 'TS':
    case 'DTM':
      return ['valueDateTime', dtm(text, 'dateTime')];
    case 'TM':
      return /^\d{2}(\d{2})?(\d{2})?$/.test(text) ? ['valueTime', `${text.slice(0, 2)}:${text.slice(2, 4) || '00'}:${text.slice(4, 6) || '00'}`] : ['valueString', text];
    case 'ED':
    case 'RP':
      ctx.issues.push(issue({ severity: 'information', issueCode: 'informational', text: `${loc.text}: an ${type} value is not carried in an Observation`, where: loc.text }));
      return ['value', undefined];
    default:
      return ['valueString', all.map((r) => r.map((c) => c.join('&')).join('^')).join('\n')];
  }
}

/** OBX-6 (CWE) as a Quantity's unit: UCUM (or no system named) also as its system and code. */
function unitOf(spec: ElementSpec, scope: Scope): { unit?: string; system?: string; code?: string } {
  const unit = spec.unit ? reps(scope, parseLoc(spec.unit))[0] : undefined;
  const code = comp(unit, 1);
  if (!present(code)) return {};
  const system = /^(UCUM|ISO\+|ANS\+)$/i.test(comp(unit, 3)) || comp(unit, 3) === '' ? 'http://unitsofmeasure.org' : undefined;
  return { unit: comp(unit, 2) || code, ...(system ? { system, code } : {}) };
}

/** PRD segments of the group with PRD-1 = role (RP referring, RT referred-to) → references. */
export function providerRefs(roleCode: string, scope: Scope, ctx: Ctx): Reference[] {
  const out: Reference[] = [];
  for (const prd of scope.group.filter((s) => s.name === 'PRD')) {
    if (comp(prd.fields[1]?.[0], 1).toUpperCase() !== roleCode) continue;
    const name = xpn(prd.fields[2]?.[0], ctx);
    const idRep = prd.fields[7]?.[0];
    const id = idRep ? comp(idRep, 1) : '';
    const org = xonParts(prd.fields[10]?.[0], ctx); // PRD-10 provider organisation (v2.6+)
    // PRD-7 identifier ^ type/assigner: a Business Register code (EE-ARIREG, BR, or 8 digits that pass its check
    // digit, not a professional code) names an organisation — a municipality's social department, a care home —
    // whose name PRD-2 then carries (as written, in the family-name component)
    const assigner = idRep ? `${comp(idRep, 2)}|${comp(idRep, 4)}|${comp(idRep, 5)}`.toUpperCase() : '';
    const registry = present(id) && /^\d{8}$/.test(id) && (/ARIREG|(^|\|)BR(\||$)|EE-BR/.test(assigner) || checkRegistryCode(id)) && !/^[DNMAPS]\d{5}$/.test(id);
    if (registry) {
      const orgName = name ? [name.family, ...(name.given ?? [])].filter(Boolean).join(' ') || name.text : org?.name;
      out.push(organizationRef({ identifier: { system: SYSTEMS.organisation, value: id }, ...(orgName ? { name: orgName } : {}) }, ctx));
      continue;
    }
    const identifier = idRep && present(id) ? { system: /^[DNMAPS]\d{5}$/.test(id) ? SYSTEMS.professional : `urn:care-gateway:assigner:${encodeURIComponent(comp(idRep, 2) || ctx.facility)}`, value: id } : undefined;
    if (name || identifier) out.push(practitionerRef({ identifier, name }, ctx));
    else if (org) out.push(organizationRef(org, ctx));
  }
  return out;
}

/** ROL → care-team membership (and PP → the GP). */
export function roleChange(rule: ResourceFile, scope: Scope, ctx: Ctx): TeamChange[] {
  const spec = rule.role!;
  const code = read(scope, parseLoc(spec.from));
  const member = xcnParts(reps(scope, parseLoc(spec.member))[0], ctx);
  if (!present(code) || !member) return [];
  const mapped = ctx.codes.lookup(spec.table, code);
  const ref = practitionerRef(member, ctx);
  const start = spec.start ? dtm(read(scope, parseLoc(spec.start)), 'dateTime') : undefined;
  const end = spec.end ? dtm(read(scope, parseLoc(spec.end)), 'dateTime') : undefined;
  const r = code === spec.generalPractitioner ? roleOf(ROLES.generalPractitioner) : mapped ? { coding: [mapped], text: mapped.display } : { coding: [{ system: ctx.codes.sourceSystem(spec.table), code }], text: code };
  return [{ member: ref, role: r, start, ...(end && Date.parse(end) < Date.now() ? { end } : {}) }];
}

/**
 * The document body: each encapsulated (ED) OBX becomes an attachment; text OBX lines (TX/FT/ST) together become one
 * text/plain attachment. The OBX segments are those the route gives the rule (`with` / `context`: the OBX of an ORU's
 * ORDER_DOCUMENT), else every OBX of the message (MDM, where the OBX segments are the document).
 */
export function documentBody(scope: Scope, spec: ElementSpec, ctx: Ctx): Attachment[] {
  const given = scope.withSegs.filter((s) => s.name === 'OBX');
  const obx = given.length ? given : scope.msg.segments.filter((s) => s.name === 'OBX');
  if (!obx.length) return [];
  const declared = spec.contentType ? read(scope, parseLoc(spec.contentType)) : '';
  const out: Attachment[] = [];
  const lines: string[] = [];
  for (const s of obx) {
    const type = comp(s.fields[2]?.[0], 1).toUpperCase();
    if (type !== 'ED') {
      lines.push((s.fields[5] ?? []).map((r) => r.map((c) => c.join('&')).join('^')).join('\n'));
      continue;
    }
    const v = s.fields[5]?.[0];
    const [mime, subtype, encoding, data] = [comp(v, 2), comp(v, 3), comp(v, 4).toUpperCase(), comp(v, 5)];
    const contentType = subtype.includes('/') ? subtype : mime && subtype ? `${mimeType(mime)}/${subtype}`.toLowerCase() : declared || 'application/octet-stream';
    const where = `OBX[${obx.indexOf(s) + 1}]-5.5`;
    if (!present(data)) {
      ctx.issues.push(issue({ severity: 'warning', text: `${where}: the encapsulated document is empty`, where }));
      out.push({ contentType });
      continue;
    }
    const b64 = encoding === 'BASE64' ? data.replace(/\s+/g, '') : Buffer.from(data, encoding === 'HEX' ? 'hex' : 'utf8').toString('base64');
    if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(b64)) {
      ctx.issues.push(issue({ severity: 'warning', text: `${where}: the document data is not valid Base64; left out`, where }));
      out.push({ contentType, title: 'document data was not valid Base64 and was left out' });
      continue;
    }
    out.push({ contentType, data: b64, size: Buffer.byteLength(b64, 'base64') });
  }
  if (lines.length) {
    const text = lines.join('\n');
    out.push({ contentType: declared && declared.includes('/') ? declared : 'text/plain; charset=utf-8', data: Buffer.from(text, 'utf8').toString('base64'), size: Buffer.byteLength(text) });
  }
  return out;
}

/** ED type of data (table 0191: AP application, TEXT, IM image, AU audio, …) → the MIME top-level type. */
function mimeType(t: string): string {
  const m: Record<string, string> = { AP: 'application', TEXT: 'text', TX: 'text', IM: 'image', AU: 'audio', MULTIPART: 'multipart' };
  return m[t.toUpperCase()] ?? t.toLowerCase();
}
