/**
 * HL7 v2 → FHIR R4 with mappings as data. `mappings/hl7v2/messages/<STRUCTURE>.yaml` routes segments to
 * resource rules and says what each trigger event means; `mappings/hl7v2/resources/<Rule>.yaml` maps fields to
 * elements with the datatype converters of datatypes.ts and the code tables of mappings/codes/. Files are
 * compiled once (locations parsed, tables loaded); a message only walks the compiled rules.
 *
 * Every conversion returns what it produced and what it did not use (segments and fields), as issues.
 * Resource ids are derived from source identifiers, so a re-sent message lands on the same resources.
 *
 * @see https://build.fhir.org/ig/HL7/v2-to-fhir/ (message, segment and datatype maps)
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { Attachment, Coding, Identifier, Organization, Patient, Practitioner, Reference, Resource } from '@medplum/fhirtypes';
import type { OperationOutcomeIssue } from '../fhir/types.js';
import { OutcomeError, issue } from '../fhir/outcome.js';
import { SYSTEMS, checkIsikukood, deterministicId } from '../fhir/identifiers.js';
import type { Hl7Message, Hl7Repetition, Hl7Segment } from '../ingest/hl7v2/message.js';
import { structureFor } from '../ingest/hl7v2/parse.js';
import type { PlanEvent } from '../careplan/rules.js';
import type { TeamChange } from '../careplan/assemble.js';
import { ROLES, role as roleOf } from '../careplan/roles.js';
import { mappingsDir } from './files.js';
import { loadCodeTables, type CodeTables } from './codes.js';
import { comp, cwe, cx, dtm, present, xad, xcnParts, xonParts, xpn, xtn, type IdentifierContext } from './datatypes.js';

/* ------------------------------------------------------------------ mapping file shapes */

interface Loc {
  segment: string;
  field: number;
  component?: number;
  sub?: number;
  text: string;
}

interface ElementSpec {
  from?: string;
  type?: string;
  table?: string;
  as?: 'code' | 'Coding' | 'CodeableConcept';
  all?: boolean;
  use?: string;
  into?: string;
  add?: Record<string, unknown>;
  default?: unknown;
  fallback?: string;
  ref?: 'Practitioner' | 'Organization';
  value?: unknown;
  'ref-to'?: string;
  'refs-to'?: string;
  group?: boolean;
  present?: unknown;
  else?: unknown;
  equals?: string;
  then?: unknown;
  valueType?: string;
  unit?: string;
  document?: string;
  contentType?: string;
  provider?: string;
  wrapText?: boolean;
  /** skip when this element already has a value (choice types like deceased[x]) */
  unless?: string;
}

interface ResourceFile {
  resourceType: string;
  /** other segments of the group this rule reads (PRD for a referral, OBX for a document body) */
  uses?: string[];
  id?: { recipe?: 'patient'; from?: string; key?: string[]; scope?: 'patient' | 'facility'; else?: string[]; elseScope?: 'patient' | 'facility'; within?: string };
  elements?: Record<string, ElementSpec | ElementSpec[]>;
  role?: { from: string; table: string; member: string; start?: string; end?: string; generalPractitioner?: string };
}

interface MessageFile {
  structure: string;
  events: Record<string, { plan: PlanEvent; encounterStatus?: string; clear?: string[]; requestStatus?: string; conditionStatus?: string }>;
  /** `with`: companion segments after the primary one (PD1 after PID); `context`: the nearest one before it (OBR before OBX) */
  resources: { rule: string; segment: string; with?: string[]; context?: string[]; repeat?: boolean; when?: { field: string; not?: string[] } }[];
}

interface Compiled {
  messages: Map<string, MessageFile>;
  rules: Map<string, ResourceFile & { used: Map<string, Set<number>> }>;
  codes: CodeTables;
  facilities: Map<string, { registryCode: string; name?: string }>;
}

/* ------------------------------------------------------------------ loading */

const LOC = /^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?(?:\.(\d+))?$/;

const locCache = new Map<string, Loc>();

/** `PID-3.1` → its parts; parsed once per distinct text (mapping files name a fixed set of locations). */
export function parseLoc(text: string): Loc {
  const hit = locCache.get(text);
  if (hit) return hit;
  const loc = parseLocUncached(text);
  locCache.set(text, loc);
  return loc;
}

function parseLocUncached(text: string): Loc {
  const m = LOC.exec(text);
  if (!m) throw new Error(`not an HL7 location: "${text}"`);
  return { segment: m[1], field: Number(m[2]), component: m[3] ? Number(m[3]) : undefined, sub: m[4] ? Number(m[4]) : undefined, text };
}

let compiled: Compiled | undefined;

/** Loads and checks every mapping file once; a broken file fails at start, naming the file. */
export function loadMappings(dir = mappingsDir()): Compiled {
  if (compiled && dir === mappingsDir()) return compiled;
  const read = <T>(f: string): T => {
    try {
      return YAML.parse(fs.readFileSync(f, 'utf8')) as T;
    } catch (err) {
      throw new Error(`${path.relative(dir, f)}: ${(err as Error).message}`);
    }
  };
  const messages = new Map<string, MessageFile>();
  for (const f of fs.readdirSync(path.join(dir, 'hl7v2/messages')).filter((x) => x.endsWith('.yaml'))) {
    const m = read<MessageFile>(path.join(dir, 'hl7v2/messages', f));
    messages.set(m.structure, m);
  }
  const rules = new Map<string, ResourceFile & { used: Map<string, Set<number>> }>();
  for (const f of fs.readdirSync(path.join(dir, 'hl7v2/resources')).filter((x) => x.endsWith('.yaml'))) {
    const r = read<ResourceFile>(path.join(dir, 'hl7v2/resources', f));
    const used = new Map<string, Set<number>>();
    const mark = (loc: string | undefined): void => {
      if (!loc) return;
      const l = parseLoc(loc);
      if (!used.has(l.segment)) used.set(l.segment, new Set());
      used.get(l.segment)!.add(l.field);
    };
    for (const specs of Object.values(r.elements ?? {})) {
      for (const s of Array.isArray(specs) ? specs : [specs]) {
        for (const k of ['from', 'fallback', 'valueType', 'unit', 'contentType'] as const) mark(s[k]);
      }
    }
    for (const k of r.id?.key ?? []) mark(k);
    if (r.role) for (const k of [r.role.from, r.role.member, r.role.start, r.role.end]) mark(k);
    rules.set(path.basename(f, '.yaml'), { ...r, used });
  }
  for (const m of messages.values()) for (const r of m.resources) if (!rules.has(r.rule)) throw new Error(`messages/${m.structure}.yaml: no resource rule "${r.rule}"`);
  const fac = read<{ facilities: Record<string, { registryCode: string; name?: string }> }>(path.join(dir, 'hl7v2/facilities.yaml'));
  const facilities = new Map(Object.entries(fac.facilities ?? {}).map(([k, v]) => [k.toUpperCase(), v]));
  const c: Compiled = { messages, rules, codes: loadCodeTables(path.join(dir, 'codes')), facilities };
  if (dir === mappingsDir()) compiled = c;
  return c;
}

/* ------------------------------------------------------------------ conversion */

export interface Conversion {
  /** the Patient the message is about (survivor for a merge) */
  patient: Patient;
  /** every other resource produced, with ids */
  resources: Resource[];
  /** the sending facility as an Organization (MSH-4), when named */
  organization?: Organization;
  /** EVN-5: who caused the event */
  author?: Reference;
  event: { type: string; trigger: string; plan: PlanEvent; occurredAt?: string };
  encounterId?: string;
  merge?: { retiredPatientId: string };
  team: TeamChange[];
  /** segments present in the message (for the coordination rules' segment tests) */
  segments: string[];
  /** errors (content is wrong → AE), warnings and information (unused segments and fields) */
  issues: OperationOutcomeIssue[];
  unused: string[];
}

interface Ctx extends IdentifierContext {
  senderId?: string;
  msg: Hl7Message;
  m: Compiled;
  issues: OperationOutcomeIssue[];
  produced: Resource[];
  patientId?: string;
  facility: string;
}

/** Which resource a segment instance built, for `ref-to` and `refs-to`. */
interface Built {
  resource: Resource;
  segment: Hl7Segment;
}

export function convertHl7(msg: Hl7Message, dir?: string): Conversion {
  const m = loadMappings(dir);
  const structure = m.messages.has(msg.structure) ? msg.structure : structureFor(msg.messageType, msg.triggerEvent);
  const mf = structure ? m.messages.get(structure) : undefined;
  if (!mf) {
    throw new OutcomeError('unsupported', `message type ${msg.messageType}^${msg.triggerEvent} (${msg.structure}) is not supported; supported: ${[...m.messages.keys()].join(', ')}`, 'MSH-9');
  }
  const ev = mf.events[msg.triggerEvent];
  if (!ev) throw new OutcomeError('unsupported', `trigger event ${msg.triggerEvent} is not supported for ${structure}`, 'MSH-9.2');

  const msh = msg.segments[0];
  const facility = comp(msh.fields[4]?.[0], 1);
  const ctx: Ctx = {
    msg,
    m,
    issues: [],
    produced: [],
    facility,
    codes: m.codes,
    registryCodeOf: (name) => m.facilities.get(name.trim().toUpperCase())?.registryCode,
  };
  const evn = msg.segments.find((s) => s.name === 'EVN');
  const occurredAt = dtm(comp(evn?.fields[6]?.[0], 1), 'dateTime') ?? dtm(comp(evn?.fields[2]?.[0], 1), 'dateTime') ?? dtm(comp(msh.fields[7]?.[0], 1), 'dateTime');
  const organization = senderOrganization(msh, ctx);
  if (organization) {
    ctx.produced.push(organization);
    ctx.senderId = organization.id;
  }
  const authorParts = xcnParts(evn?.fields[5]?.[0], ctx);
  const author = authorParts ? practitionerRef(authorParts, ctx) : undefined;

  const built: Built[] = [];
  const team: TeamChange[] = [];
  const usedSegments = new Set<number>([0]);
  if (evn) usedSegments.add(evn.index);
  const unused: string[] = [];

  for (const route of mf.resources) {
    const rule = m.rules.get(route.rule)!;
    const primaries = msg.segments.filter((s) => s.name === route.segment);
    for (const seg of route.repeat ? primaries : primaries.slice(0, 1)) {
      const group = groupOf(msg, seg, route.segment);
      const withSegs = (route.with ?? []).map((n) => group.find((s) => s.name === n)).filter((s): s is Hl7Segment => !!s);
      const context = (route.context ?? [])
        .map((n) => [...msg.segments.slice(0, seg.index)].reverse().find((s) => s.name === n))
        .filter((s): s is Hl7Segment => !!s);
      const scope: Scope = { msg, seg, withSegs: [...withSegs, ...context], group };
      if (route.when) {
        const v = read(scope, parseLoc(route.when.field));
        if (route.when.not?.includes(v)) continue;
      }
      usedSegments.add(seg.index);
      withSegs.forEach((s) => usedSegments.add(s.index));
      if (rule.role) {
        team.push(...roleChange(rule, scope, ctx));
        continue;
      }
      const r = buildResource(route.rule, rule, scope, ctx, built);
      if (!r) continue;
      built.push({ resource: r, segment: seg });
      // fields of this segment (and its companions) that no element reads
      for (const s of [seg, ...withSegs]) {
        const used = rule.used.get(s.name);
        for (let n = 1; n < s.fields.length; n++) if (!used?.has(n) && hasContent(s.fields[n])) unused.push(`${s.name}-${n}`);
      }
      for (const name of rule.uses ?? []) group.filter((s) => s.name === name).forEach((s) => usedSegments.add(s.index));
    }
  }
  for (const s of msg.segments) if (!usedSegments.has(s.index)) unused.push(s.name);

  const patientBuilt = built.find((b) => b.resource.resourceType === 'Patient' && b.segment.name === 'PID');
  if (!patientBuilt) throw new OutcomeError('invalid', 'the message has no PID segment with a usable patient identifier', 'PID-3');
  const patient = patientBuilt.resource as Patient;
  const retired = built.find((b) => b.segment.name === 'MRG')?.resource as Patient | undefined;
  if (retired?.id === patient.id) throw new OutcomeError('invalid', 'MRG-1 names the same patient as PID-3: nothing to merge', 'MRG-1');

  // GP from ROL with role PP joins Patient.generalPractitioner (V2-to-FHIR IG: ROL-3 PP)
  for (const t of team.filter((x) => x.role.coding?.[0].code === ROLES.generalPractitioner.code)) {
    patient.generalPractitioner = [...(patient.generalPractitioner ?? []).filter((g) => g.reference !== t.member.reference), t.member];
  }
  const encounter = built.find((b) => b.resource.resourceType === 'Encounter')?.resource;
  if (encounter) applyEventToEncounter(encounter as Resource & Record<string, unknown>, ev);
  if (ev.requestStatus) for (const b of built) if (b.resource.resourceType === 'ServiceRequest') (b.resource as { status?: string }).status = ev.requestStatus;
  if (ev.requestStatus === 'revoked') for (const b of built) if (b.resource.resourceType === 'Task') (b.resource as { status?: string }).status = 'cancelled';
  if (ev.conditionStatus) {
    for (const b of built) if (b.resource.resourceType === 'Condition') (b.resource as { verificationStatus?: unknown }).verificationStatus = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: ev.conditionStatus }] };
  }

  const resources = dedupe([...ctx.produced, ...built.map((b) => b.resource)]).filter((r) => r !== patient);
  for (const u of unused) ctx.issues.push(issue({ severity: 'information', issueCode: 'informational', text: `${u} was not mapped`, where: u }));
  return {
    patient,
    resources,
    organization,
    author,
    event: { type: msg.messageType, trigger: msg.triggerEvent, plan: ev.plan, occurredAt },
    encounterId: encounter?.id,
    merge: retired ? { retiredPatientId: retired.id! } : undefined,
    team,
    segments: [...new Set(msg.segments.map((s) => s.name))],
    issues: ctx.issues,
    unused,
  };
}

function hasContent(f: Hl7Repetition[]): boolean {
  for (const rep of f) for (const c of rep) for (const x of c) if (x !== '' && x !== '""' && x.trim() !== '') return true;
  return false;
}

function dedupe(rs: Resource[]): Resource[] {
  const seen = new Set<string>();
  return rs.filter((r) => {
    const k = `${r.resourceType}/${r.id}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function applyEventToEncounter(e: Record<string, unknown>, ev: MessageFile['events'][string]): void {
  if (ev.encounterStatus) e.status = ev.encounterStatus;
  for (const p of ev.clear ?? []) {
    const [head, tail] = p.split('.');
    const obj = e[head] as Record<string, unknown> | undefined;
    if (!obj) continue;
    if (tail) delete obj[tail];
    if (!tail || Object.keys(obj).length === 0) delete e[head];
  }
  // A finished encounter must have an end; an encounter in progress must not
  if (e.status === 'in-progress' && (e.period as { end?: string } | undefined)?.end) delete (e.period as { end?: string }).end;
}

/* ------------------------------------------------------------------ segments and values */

interface Scope {
  msg: Hl7Message;
  seg: Hl7Segment;
  withSegs: Hl7Segment[];
  /** the segments from this one up to the next segment of the same name */
  group: Hl7Segment[];
}

/** The segments belonging to a primary segment: from it up to the next segment with its name (or the end). */
function groupOf(msg: Hl7Message, seg: Hl7Segment, name: string): Hl7Segment[] {
  const out: Hl7Segment[] = [];
  for (let i = seg.index; i < msg.segments.length; i++) {
    if (i > seg.index && msg.segments[i].name === name) break;
    out.push(msg.segments[i]);
  }
  return out;
}

function segmentFor(scope: Scope, name: string): Hl7Segment | undefined {
  if (scope.seg.name === name) return scope.seg;
  return scope.withSegs.find((s) => s.name === name) ?? (name === 'MSH' || name === 'EVN' ? scope.msg.segments.find((s) => s.name === name) : undefined);
}

function reps(scope: Scope, loc: Loc): Hl7Repetition[] {
  return segmentFor(scope, loc.segment)?.fields[loc.field] ?? [];
}

function read(scope: Scope, loc: Loc, rep = 0): string {
  const r = reps(scope, loc)[rep];
  return (r?.[(loc.component ?? 1) - 1]?.[(loc.sub ?? 1) - 1] ?? '').trim();
}

/* ------------------------------------------------------------------ resources */

function buildResource(name: string, rule: ResourceFile, scope: Scope, ctx: Ctx, built: Built[]): Resource | undefined {
  const r: Record<string, unknown> = { resourceType: rule.resourceType };
  if (rule.id?.recipe === 'patient') {
    const where = rule.id.from ?? 'PID-3';
    const id = patientId(reps(scope, parseLoc(where)), ctx, where);
    if (!id) return undefined;
    r.id = id;
    if (scope.seg.name === 'PID') ctx.patientId = id;
  } else {
    r.id = recipeId(rule, scope, ctx);
  }
  for (const [target, specs] of Object.entries(rule.elements ?? {})) {
    for (const spec of Array.isArray(specs) ? specs : [specs]) {
      if (spec.valueType) {
        const [key, v] = observationValue(spec, scope, ctx);
        if (v !== undefined) r[key] = v;
        continue;
      }
      if (spec.unless && r[spec.unless] !== undefined) continue;
      const values = evaluate(spec, scope, ctx, built);
      for (const v of values) setPath(r, target, v);
    }
  }
  if (rule.resourceType === 'Patient') checkPatient(r as unknown as Patient, rule.id?.from ?? 'PID-3', ctx);
  if (name === 'DocumentReference' && !(r.content as unknown[] | undefined)?.length) {
    r.content = [{ attachment: { contentType: 'text/plain', title: 'document body not included in the message' } }];
  }
  return r as unknown as Resource;
}

/** A birth date or sex that contradicts a valid isikukood is a warning (the checksum itself is checked in patientId). */
function checkPatient(p: Patient, where: string, ctx: Ctx): void {
  for (const id of p.identifier ?? []) {
    if (id.system !== SYSTEMS.isikukood || !id.value) continue;
    const c = checkIsikukood(id.value);
    if (!c.valid) continue;
    if (p.birthDate && p.birthDate.length === 10 && p.birthDate !== c.birthDate) {
      ctx.issues.push(issue({ severity: 'warning', text: `birth date ${p.birthDate} contradicts isikukood ${id.value} (${c.birthDate})`, where: 'PID-7' }));
    }
    if ((p.gender === 'male' || p.gender === 'female') && p.gender !== c.gender) {
      ctx.issues.push(issue({ severity: 'warning', text: `sex ${p.gender} contradicts isikukood ${id.value} (${c.gender})`, where: 'PID-8' }));
    }
  }
  void where;
}

/** OBX-5 by OBX-2 → Observation.value[x]. */
function observationValue(spec: ElementSpec, scope: Scope, ctx: Ctx): [string, unknown] {
  const type = read(scope, parseLoc(spec.valueType!)).toUpperCase();
  const loc = parseLoc(spec.from!);
  const values = reps(scope, loc);
  const first = values[0];
  const text = comp(first, 1);
  if (!first || (!present(text) && type !== 'CWE' && type !== 'CE')) return ['value', undefined];
  if (values.length > 1 && type === 'NM') ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: ${values.length} numeric values; the first is used`, where: loc.text }));
  switch (type) {
    case 'NM': {
      if (!/^[-+]?\d+(\.\d+)?$/.test(text)) return ['valueString', text];
      const unit = spec.unit ? reps(scope, parseLoc(spec.unit))[0] : undefined;
      const code = comp(unit, 1);
      const system = /^(UCUM|ISO\+|ANS\+)$/i.test(comp(unit, 3)) || comp(unit, 3) === '' ? 'http://unitsofmeasure.org' : undefined;
      return ['valueQuantity', { value: Number(text), ...(present(code) ? { unit: comp(unit, 2) || code, ...(system ? { system, code } : {}) } : {}) }];
    }
    case 'SN': {
      const [cmp, n1, sep, n2] = [comp(first, 1), comp(first, 2), comp(first, 3), comp(first, 4)];
      if (sep === '-' && present(n1) && present(n2)) return ['valueRange', { low: { value: Number(n1) }, high: { value: Number(n2) } }];
      if ((sep === ':' || sep === '/') && present(n1) && present(n2)) return ['valueRatio', { numerator: { value: Number(n1) }, denominator: { value: Number(n2) } }];
      const comparator = ['<', '<=', '>', '>='].includes(cmp) ? cmp : undefined;
      return present(n1) ? ['valueQuantity', { value: Number(n1), ...(comparator ? { comparator } : {}) }] : ['value', undefined];
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
      return ['valueString', values.map((r) => r.map((c) => c.join('&')).join('^')).join('\n')];
  }
}

function setPath(r: Record<string, unknown>, target: string, v: unknown): void {
  if (v === undefined || v === null) return;
  const parts = target.split('.');
  let o = r;
  for (let i = 0; i < parts.length; i++) {
    const isArray = parts[i].endsWith('[]');
    const key = isArray ? parts[i].slice(0, -2) : parts[i];
    const last = i === parts.length - 1;
    if (last) {
      if (isArray) o[key] = [...((o[key] as unknown[]) ?? []), ...(Array.isArray(v) ? v : [v])];
      else if (o[key] === undefined) o[key] = v;
      return;
    }
    o[key] ??= {};
    o = o[key] as Record<string, unknown>;
  }
}

function evaluate(spec: ElementSpec, scope: Scope, ctx: Ctx, built: Built[]): unknown[] {
  const wrap = (v: unknown): unknown => {
    if (spec.wrapText) v = [{ text: v }];
    return spec.into ? { ...(spec.add ?? {}), [spec.into]: v } : spec.add && typeof v === 'object' && v ? { ...(v as object), ...spec.add } : v;
  };
  if (spec.value !== undefined) return [spec.value];
  if (spec['ref-to']) {
    const t = spec['ref-to'];
    const target =
      t === 'Organization' ? ctx.produced.find((r) => r.resourceType === 'Organization' && r.id === ctx.senderId) : [...built].reverse().find((b) => b.resource.resourceType === t)?.resource;
    return target ? [wrap({ reference: `${target.resourceType}/${target.id}` })] : [];
  }
  if (spec['refs-to']) {
    const t = spec['refs-to'];
    const inGroup = new Set(scope.group.map((s) => s.index));
    return built.filter((b) => b.resource.resourceType === t && (!spec.group || inGroup.has(b.segment.index))).map((b) => wrap({ reference: `${t}/${b.resource.id}` }));
  }
  if (spec.provider) return providerRefs(spec.provider, scope, ctx).map(wrap);
  if (spec.document) return documentBody(scope, spec, ctx).map(wrap);
  if (spec.valueType) return []; // handled below via observationValue (needs the target key), see applyObservationValue
  if (!spec.from) return [];
  const loc = parseLoc(spec.from);
  let v = convert(spec, scope, loc, ctx);
  if (!v.length && spec.fallback) v = convert(spec, scope, parseLoc(spec.fallback), ctx);
  if (spec.present !== undefined) return [read(scope, loc) && present(read(scope, loc)) ? spec.present : spec.else];
  if (spec.equals !== undefined) return read(scope, loc) === spec.equals ? [spec.then] : [];
  if (!v.length && spec.default !== undefined) return [spec.default];
  return v.map(wrap);
}

function convert(spec: ElementSpec, scope: Scope, loc: Loc, ctx: Ctx): unknown[] {
  const all = reps(scope, loc);
  const list = spec.all ? all : all.slice(0, 1);
  const out: unknown[] = [];
  list.forEach((rep) => {
    const text = (rep?.[(loc.component ?? 1) - 1]?.[(loc.sub ?? 1) - 1] ?? '').trim();
    let v: unknown;
    if (spec.table && !spec.type) {
      if (!present(text)) return;
      const mapped = ctx.codes.lookup(spec.table, text);
      const coding = mapped ?? lookupCode(spec.table, text, loc.text, ctx);
      // an unmapped code cannot fill a `code` element (it would not be valid FHIR): it is reported and left out
      if ((spec.as ?? 'code') === 'code') v = mapped?.code;
      else v = spec.as === 'Coding' ? coding : { coding: [coding] };
    } else {
      switch (spec.type ?? 'string') {
        case 'string':
          v = present(text) ? text : undefined;
          break;
        case 'integer':
          v = /^-?\d+$/.test(text) ? Number(text) : undefined;
          break;
        case 'decimal':
          v = /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : undefined;
          break;
        case 'boolean':
          v = text === 'Y' ? true : text === 'N' ? false : undefined;
          break;
        case 'date':
        case 'dateTime':
        case 'instant':
          if (present(text)) {
            v = dtm(text, spec.type as "date" | "dateTime" | "instant");
            if (!v) ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: "${text}" is not an HL7 date/time; left out`, where: loc.text }));
          }
          break;
        case 'CX':
          v = cx(rep, ctx);
          break;
        case 'XPN':
          v = xpn(rep, ctx);
          break;
        case 'XAD':
          v = xad(rep, ctx);
          break;
        case 'XTN':
          v = xtn(rep, spec.use as 'home' | 'work' | undefined);
          break;
        case 'CWE': {
          const cc = cwe(rep);
          if (cc && spec.table) {
            const code = comp(rep, 1);
            const mapped = ctx.codes.lookup(spec.table, code);
            if (mapped) cc.coding = [mapped, ...(cc.coding ?? []).filter((c) => c.code !== mapped.code)];
            else if (present(code)) {
              const src = ctx.codes.sourceSystem(spec.table);
              cc.coding = (cc.coding ?? []).map((c) => (c.system ? c : { ...c, ...(src ? { system: src } : {}) }));
              ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: code "${code}" has no mapping in mappings/codes (${spec.table}); kept as sent`, where: loc.text }));
            }
          }
          v = cc;
          break;
        }
        case 'XCN': {
          const parts = xcnParts(rep, ctx);
          v = parts && spec.ref === 'Practitioner' ? practitionerRef(parts, ctx) : parts?.name;
          break;
        }
        case 'XON': {
          const parts = xonParts(rep, ctx);
          v = parts && spec.ref === 'Organization' ? organizationRef(parts, ctx) : parts?.name;
          break;
        }
        default:
          throw new Error(`mapping: unknown type ${spec.type} at ${loc.text}`);
      }
    }
    if (v !== undefined) out.push(v);
  });
  return out;
}

function lookupCode(table: string, code: string, where: string, ctx: Ctx): Coding {
  const hit = ctx.codes.lookup(table, code);
  if (hit) return hit;
  ctx.issues.push(issue({ severity: 'warning', text: `${where}: code "${code}" has no mapping in mappings/codes (${table})`, where }));
  const src = ctx.codes.sourceSystem(table);
  return { ...(src ? { system: src } : {}), code };
}

/* ------------------------------------------------------------------ identity */

/** The Patient id for an identifier list: the isikukood if any, else the first identifier with a system. */
function patientId(list: Hl7Repetition[], ctx: Ctx, where: string): string | undefined {
  const ids = list.map((r) => cx(r, ctx)).filter((x): x is Identifier => !!x);
  for (const [i, id] of ids.entries()) {
    if (id.system !== SYSTEMS.isikukood) continue;
    const check = checkIsikukood(id.value ?? '');
    if (!check.valid) {
      ctx.issues.push(issue({ category: 'invalid', text: `${where}: isikukood ${id.value} is not valid: ${check.reason}`, where: `${where}${i ? `[${i + 1}]` : ''}.1` }));
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

function recipeId(rule: ResourceFile, scope: Scope, ctx: Ctx): string {
  const keyVals = (rule.id?.key ?? []).map((k) => read(scope, parseLoc(k))).filter(present);
  const scopeParts = (s: 'patient' | 'facility' | undefined): string[] => (s === 'patient' ? [ctx.patientId ?? ''] : s === 'facility' ? [ctx.facility] : []);
  const within: string[] = [];
  if (rule.id?.within) {
    const before = [...scope.msg.segments.slice(0, scope.seg.index)].reverse().find((s) => s.name === rule.id!.within);
    if (before) within.push(before.fields.slice(1, 5).map((f) => f.map((r) => r.map((c) => c.join('&')).join('^')).join('~')).join('|'));
  }
  if (keyVals.length) return deterministicId(rule.resourceType, ...scopeParts(rule.id?.scope), ...within, ...keyVals);
  const elseVals = (rule.id?.else ?? []).map((k) => read(scope, parseLoc(k))).filter(present);
  if (elseVals.length) return deterministicId(rule.resourceType, ...scopeParts(rule.id?.elseScope ?? rule.id?.scope), ...elseVals);
  // nothing identifies it: the whole segment, within the patient
  const raw = scope.seg.fields.map((f) => f.map((r) => r.map((c) => c.join('&')).join('^')).join('~')).join('|');
  return deterministicId(rule.resourceType, ctx.patientId ?? '', scope.seg.name, raw);
}

function senderOrganization(msh: Hl7Segment, ctx: Ctx): Organization | undefined {
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

function practitionerRef(parts: { identifier?: Identifier; name?: Practitioner['name'] extends (infer N)[] | undefined ? N : never }, ctx: Ctx): Reference {
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

function organizationRef(parts: { identifier?: Identifier; name?: string }, ctx: Ctx): Reference {
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

/** PRD segments of the group with PRD-1 = role (RP referring, RT referred-to) → references. */
function providerRefs(roleCode: string, scope: Scope, ctx: Ctx): Reference[] {
  const out: Reference[] = [];
  for (const prd of scope.group.filter((s) => s.name === 'PRD')) {
    if (comp(prd.fields[1]?.[0], 1).toUpperCase() !== roleCode) continue;
    const name = xpn(prd.fields[2]?.[0], ctx);
    const idRep = prd.fields[7]?.[0];
    const identifier = idRep && present(comp(idRep, 1)) ? { system: /^[DNMAPS]\d{5}$/.test(comp(idRep, 1)) ? SYSTEMS.professional : `urn:care-gateway:assigner:${encodeURIComponent(comp(idRep, 2) || ctx.facility)}`, value: comp(idRep, 1) } : undefined;
    if (name || identifier) out.push(practitionerRef({ identifier, name }, ctx));
    else {
      const org = xonParts(prd.fields[10]?.[0], ctx); // PRD-10 provider organisation (v2.6+)
      if (org) out.push(organizationRef(org, ctx));
    }
  }
  return out;
}

/** ROL → care-team membership (and PP → the GP). */
function roleChange(rule: ResourceFile, scope: Scope, ctx: Ctx): TeamChange[] {
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
 * The document body of an MDM message: each encapsulated (ED) OBX becomes an attachment; text OBX lines
 * (TX/FT/ST) together become one text/plain attachment.
 */
function documentBody(scope: Scope, spec: ElementSpec, ctx: Ctx): Attachment[] {
  const obx = scope.msg.segments.filter((s) => s.name === 'OBX');
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
