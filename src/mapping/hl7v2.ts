/**
 * HL7 v2 → FHIR R4 with mappings as data. `mappings/hl7v2/messages/<STRUCTURE>.yaml` routes segments to
 * resource rules and says what each trigger event means; `mappings/hl7v2/resources/<Rule>.yaml` maps fields to
 * elements with the datatype converters of datatypes.ts and the code tables of mappings/codes/. Files are
 * compiled once (locations parsed, tables loaded); a message only walks the compiled rules.
 *
 * Every conversion returns what it produced and what it did not use (segments and fields), as issues.
 * Resource ids are derived from source identifiers, so a re-sent message lands on the same resources.
 *
 * The rule language (no code in YAML). A message file lists routes `{ rule, segment, repeat?, with?: [companions
 * right after it], context?: [nearest before it], when? }`. A resource file has `resourceType`, an `id` recipe
 * (`recipe: patient` | `key: [locations]`, `scope: patient|facility`, `else`, `within`) — or, instead of an id, `part:
 * contact[]` (one element of the subject built from PID, one per segment) — and `elements`, each
 * `Element.path[]: rule | [rules]` where a rule is one of:
 *   `{ from: PID-5, type: XPN|CX|XAD|XTN|CWE|XCN|XON|string|integer|decimal|boolean|date|dateTime|instant, all?,
 *      table?: <mappings/codes value set>, as?: code|Coding|CodeableConcept, fallback?, default?, into?, add? }`
 *   `{ value: <fixed FHIR data> }`, `{ from, present: a, else: b }`, `{ from, equals: X, then: v }`,
 *   `{ ref-to: Type, segment?: MRG }` / `{ refs-to: Type, segment?, group? }` (references, resolved after every
 *   resource of the message is built), `{ provider: RP }` (PRD), `{ document: OBX }` (MDM body),
 *   `{ from: OBX-5, valueType: OBX-2.1, unit: OBX-6 }` (value[x]); any rule may carry `when: { field, in|not|present }`.
 * Files are compiled at load into closures (unknown keys and bad locations fail then, naming file and element).
 *
 * @see https://build.fhir.org/ig/HL7/v2-to-fhir/ (message, segment and datatype maps)
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { Attachment, Coding, Identifier, Organization, Patient, Practitioner, Reference, Resource } from '@medplum/fhirtypes';
import type { OperationOutcomeIssue } from '../fhir/types.js';
import { OutcomeError, issue } from '../fhir/outcome.js';
import { SYSTEMS, checkIsikukood, checkRegistryCode, deterministicId, maskIsikukood } from '../fhir/identifiers.js';
import { municipalities, municipalityOrganization } from '../county/directory.js';
import type { Hl7Message, Hl7Repetition, Hl7Segment } from '../hl7v2/message.js';
import { structureFor } from '../hl7v2/parse.js';
import type { PlanEvent } from '../county/contribution.js';
import type { TeamChange } from '../county/contribution.js';
import { ROLES, role as roleOf } from '../county/roles.js';
import { mappingsDir } from '../paths.js';
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
  /** with ref-to / refs-to: only resources built from this segment (e.g. `MRG`, `DG1`) */
  segment?: string;
  /** map only when the condition on a location holds */
  when?: Condition;
}

/** A condition on the text at an HL7 location: `in` / `not` lists of codes, `present` true/false. */
interface Condition {
  field: string;
  in?: string[];
  not?: string[];
  present?: boolean;
}

const SPEC_KEYS = new Set([
  'from', 'type', 'table', 'as', 'all', 'use', 'into', 'add', 'default', 'fallback', 'ref', 'value', 'ref-to', 'refs-to', 'group', 'present',
  'else', 'equals', 'then', 'valueType', 'unit', 'document', 'contentType', 'provider', 'wrapText', 'unless', 'segment', 'when',
]);

/** One element rule compiled at load: a closure over pre-parsed locations and a pre-chosen converter. */
interface CompiledElement {
  target: string;
  /** references to other produced resources: evaluated after every resource of the message is built */
  late: boolean;
  unless?: string;
  /** value[x] rules set the element name themselves */
  choice?: (scope: Scope, ctx: Ctx) => [string, unknown];
  run: (scope: Scope, ctx: Ctx, built: Built[], self?: Resource) => unknown[];
}

interface ResourceFile {
  resourceType: string;
  /**
   * Not a resource of its own but one element of the message's subject (the resourceType built from PID), e.g.
   * `contact[]`: the elements build one object per segment, appended there (NK1 employer rows → Patient.contact).
   */
  part?: string;
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
  resources: { rule: string; segment: string; with?: string[]; context?: string[]; repeat?: boolean; when?: Condition }[];
}

type CompiledRule = ResourceFile & { used: Map<string, Set<number>>; compiled: CompiledElement[] };

interface Compiled {
  messages: Map<string, MessageFile>;
  rules: Map<string, CompiledRule>;
  codes: CodeTables;
  facilities: Map<string, { registryCode: string; name?: string; charset?: string }>;
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
  const rules = new Map<string, CompiledRule>();
  for (const f of fs.readdirSync(path.join(dir, 'hl7v2/resources')).filter((x) => x.endsWith('.yaml'))) {
    const r = read<ResourceFile>(path.join(dir, 'hl7v2/resources', f));
    const used = new Map<string, Set<number>>();
    const mark = (loc: string | undefined): void => {
      if (!loc) return;
      const l = parseLoc(loc);
      if (!used.has(l.segment)) used.set(l.segment, new Set());
      used.get(l.segment)!.add(l.field);
    };
    const compiledElements: CompiledElement[] = [];
    for (const [target, specs] of Object.entries(r.elements ?? {})) {
      for (const s of Array.isArray(specs) ? specs : [specs]) {
        for (const k of ['from', 'fallback', 'valueType', 'unit', 'contentType'] as const) mark(s[k]);
        mark(s.when?.field);
        try {
          compiledElements.push(compileElement(target, s));
        } catch (err) {
          throw new Error(`hl7v2/resources/${f}: ${target}: ${(err as Error).message}`);
        }
      }
    }
    for (const k of r.id?.key ?? []) mark(k);
    if (r.part && !r.part.endsWith('[]')) throw new Error(`hl7v2/resources/${f}: part must name an array element (e.g. contact[])`);
    if (r.part && compiledElements.some((e) => e.late || e.choice)) throw new Error(`hl7v2/resources/${f}: a part cannot hold references to other resources or value[x]`);
    if (r.role) for (const k of [r.role.from, r.role.member, r.role.start, r.role.end]) mark(k);
    rules.set(path.basename(f, '.yaml'), { ...r, used, compiled: compiledElements });
  }
  for (const m of messages.values()) for (const r of m.resources) if (!rules.has(r.rule)) throw new Error(`messages/${m.structure}.yaml: no resource rule "${r.rule}"`);
  const fac = read<{ facilities: Record<string, { registryCode: string; name?: string; charset?: string }> }>(path.join(dir, 'facilities.yaml'));
  const facilities = new Map(Object.entries(fac.facilities ?? {}).map(([k, v]) => [k.toUpperCase(), v]));
  const c: Compiled = { messages, rules, codes: loadCodeTables(path.join(dir, 'codes')), facilities };
  if (dir === mappingsDir()) compiled = c;
  return c;
}

/* ------------------------------------------------------------------ conversion */

/**
 * What one message converts to. The full set of resources is `[patient, ...resources]`: the subject Patient is
 * kept apart because the care-plan assembly treats it specially.
 */
export interface Conversion {
  /** the Patient the message is about (survivor for a merge) */
  patient: Patient;
  /** its id (deterministic from PID-3: the isikukood, else the first identifier with an assigning authority) */
  patientId: string;
  /** every other resource produced, with ids */
  resources: Resource[];
  /** ROL roles other than PP (V2-to-FHIR IG: candidates for a CareTeam); their Practitioners are in `resources` */
  careTeamCandidates: TeamChange[];
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

/**
 * Converts a parsed HL7 v2 message to FHIR R4 resources with the compiled mapping files.
 *
 * @param msg - from parseHl7
 * @param dir - a mappings folder other than the project's (tests, site overrides)
 * @returns the resources, issues (error → AE; warnings; information: every unused segment and field) and event
 * @throws OutcomeError 'unsupported' (MSH-9) for a structure or trigger without a message file; 'invalid' when
 *   there is no usable PID-3 or a merge names one patient twice
 */
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
  const pending: Pending[] = [];
  const team: TeamChange[] = [];
  const usedSegments = new Set<number>([0]);
  if (evn) usedSegments.add(evn.index);
  const unused: string[] = [];

  for (const route of mf.resources) {
    const rule = m.rules.get(route.rule)!;
    const primaries = msg.segments.filter((s) => s.name === route.segment);
    for (const seg of route.repeat ? primaries : primaries.slice(0, 1)) {
      const group = groupOf(msg, seg, route.segment);
      // companions: the segments right after the primary one whose names `with` lists (PD1 after PID, NTE after OBX)
      const withSegs: Hl7Segment[] = [];
      for (let i = seg.index + 1; i < msg.segments.length && route.with?.includes(msg.segments[i].name); i++) withSegs.push(msg.segments[i]);
      const context = (route.context ?? [])
        .map((n) => [...msg.segments.slice(0, seg.index)].reverse().find((s) => s.name === n))
        .filter((s): s is Hl7Segment => !!s);
      const scope: Scope = { msg, seg, withSegs: [...withSegs, ...context], group };
      if (route.when && !compileCondition(route.when)(scope)) continue;
      usedSegments.add(seg.index);
      withSegs.forEach((s) => usedSegments.add(s.index));
      if (rule.role) {
        team.push(...roleChange(rule, scope, ctx));
        continue;
      }
      // fields of this segment (and its companions) that no element reads
      const unusedFields = (): void => {
        for (const s of [seg, ...withSegs]) {
          const used = rule.used.get(s.name);
          for (let n = 1; n < s.fields.length; n++) if (!used?.has(n) && hasContent(s.fields[n])) unused.push(`${s.name}-${n}`);
        }
      };
      if (rule.part) {
        const subject = built.find((b) => b.resource.resourceType === rule.resourceType && b.segment.name === 'PID')?.resource;
        const part: Record<string, unknown> = {};
        for (const el of rule.compiled) for (const v of el.run(scope, ctx, built)) setPath(part, el.target, v);
        if (subject && Object.keys(part).length) setPath(subject as unknown as Record<string, unknown>, rule.part, part);
        unusedFields();
        continue;
      }
      const r = buildResource(route.rule, rule, scope, ctx, built, pending);
      if (!r) continue;
      built.push({ resource: r, segment: seg });
      unusedFields();
      for (const name of rule.uses ?? []) group.filter((s) => s.name === name).forEach((s) => usedSegments.add(s.index));
    }
  }
  for (const s of msg.segments) if (!usedSegments.has(s.index)) unused.push(s.name);
  // references between the produced resources, now that all of them exist
  for (const p of pending) {
    for (const el of p.elements) for (const v of el.run(p.scope, ctx, built, p.resource as unknown as Resource)) setPath(p.resource, el.target, v);
  }

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
    patientId: patient.id!,
    careTeamCandidates: team.filter((t) => t.role.coding?.[0].code !== ROLES.generalPractitioner.code),
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

/** A resource whose reference elements wait for the rest of the message. */
interface Pending {
  resource: Record<string, unknown>;
  scope: Scope;
  elements: CompiledElement[];
}

function buildResource(name: string, rule: CompiledRule, scope: Scope, ctx: Ctx, built: Built[], pending: Pending[]): Resource | undefined {
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
  const late: CompiledElement[] = [];
  for (const el of rule.compiled) {
    if (el.late) {
      late.push(el);
      continue;
    }
    if (el.choice) {
      const [key, v] = el.choice(scope, ctx);
      if (v !== undefined) r[key] = v;
      continue;
    }
    if (el.unless && r[el.unless] !== undefined) continue;
    for (const v of el.run(scope, ctx, built)) setPath(r, el.target, v);
  }
  if (late.length) pending.push({ resource: r, scope, elements: late });
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
      ctx.issues.push(issue({ severity: 'warning', text: `birth date ${p.birthDate} contradicts the isikukood ${maskIsikukood(id.value)} (${c.birthDate})`, where: 'PID-7' }));
    }
    if ((p.gender === 'male' || p.gender === 'female') && p.gender !== c.gender) {
      ctx.issues.push(issue({ severity: 'warning', text: `sex ${p.gender} contradicts the isikukood ${maskIsikukood(id.value)} (${c.gender})`, where: 'PID-8' }));
    }
  }
  void where;
}

/** OBX-5 by OBX-2 → Observation.value[x]. */
function observationValue(spec: ElementSpec, scope: Scope, ctx: Ctx): [string, unknown] {
  const type = read(scope, parseLoc(spec.valueType!)).toUpperCase();
  const loc = parseLoc(spec.from ?? 'OBX-5');
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

/** Compiles one element rule of a resource file into a closure; unknown keys and bad locations fail at load. */
function compileElement(target: string, spec: ElementSpec): CompiledElement {
  for (const k of Object.keys(spec)) if (!SPEC_KEYS.has(k)) throw new Error(`unknown key "${k}"`);
  const when = spec.when ? compileCondition(spec.when) : undefined;
  const guard = (run: CompiledElement['run']): CompiledElement['run'] => (when ? (sc, c, b, self) => (when(sc) ? run(sc, c, b, self) : []) : run);
  const wrap = (v: unknown): unknown => {
    if (spec.wrapText) v = [{ text: v }];
    return spec.into ? { ...(spec.add ?? {}), [spec.into]: v } : spec.add && typeof v === 'object' && v ? { ...(v as object), ...spec.add } : v;
  };
  const base = { target, late: false, unless: spec.unless };
  if (spec.value !== undefined) return { ...base, run: guard(() => [structuredClone(spec.value)]) };
  if (spec.valueType) {
    parseLoc(spec.valueType);
    return { ...base, choice: (scope, ctx) => (when && !when(scope) ? ['value', undefined] : observationValue(spec, scope, ctx)), run: () => [] };
  }
  if (spec['ref-to'] || spec['refs-to']) {
    const type = (spec['ref-to'] ?? spec['refs-to'])!;
    const many = !!spec['refs-to'];
    return {
      ...base,
      late: true,
      run: guard((scope, ctx, built, self) => {
        if (type === 'Organization' && !spec.segment) {
          const org = ctx.produced.find((r) => r.resourceType === 'Organization' && r.id === ctx.senderId);
          return org ? [wrap({ reference: `Organization/${org.id}` })] : [];
        }
        const inGroup = new Set(scope.group.map((s) => s.index));
        const candidates = built.filter(
          (b) => b.resource.resourceType === type && b.resource !== self && (!spec.segment || b.segment.name === spec.segment) && (!spec.group || inGroup.has(b.segment.index)),
        );
        if (many) return candidates.map((b) => wrap({ reference: `${type}/${b.resource.id}` }));
        // one reference: the nearest such resource before this segment, else the first one
        const before = candidates.filter((b) => b.segment.index <= scope.seg.index).pop() ?? candidates[0];
        return before ? [wrap({ reference: `${type}/${before.resource.id}` })] : [];
      }),
    };
  }
  if (spec.provider) return { ...base, run: guard((scope, ctx) => providerRefs(spec.provider!, scope, ctx).map(wrap)) };
  if (spec.document) return { ...base, run: guard((scope, ctx) => documentBody(scope, spec, ctx).map(wrap)) };
  if (!spec.from) throw new Error('needs one of from, value, valueType, ref-to, refs-to, provider, document');
  const loc = parseLoc(spec.from);
  const fallback = spec.fallback ? parseLoc(spec.fallback) : undefined;
  if (spec.present !== undefined) return { ...base, run: guard((scope) => [present(read(scope, loc)) ? spec.present : spec.else]) };
  if (spec.equals !== undefined) return { ...base, run: guard((scope) => (read(scope, loc) === spec.equals ? [structuredClone(spec.then)] : [])) };
  const one = compileConverter(spec);
  const convert = (scope: Scope, l: Loc, ctx: Ctx): unknown[] => {
    // `all` over a companion that repeats (NTE after OBX) reads every one of them
    const all = spec.all && scope.seg.name !== l.segment ? scope.withSegs.filter((s) => s.name === l.segment).flatMap((s) => s.fields[l.field] ?? []) : reps(scope, l);
    const out: unknown[] = [];
    for (const rep of spec.all ? all : all.slice(0, 1)) {
      const v = one(rep, (rep?.[(l.component ?? 1) - 1]?.[(l.sub ?? 1) - 1] ?? '').trim(), l, ctx);
      if (v !== undefined) out.push(v);
    }
    return out;
  };
  return {
    ...base,
    run: guard((scope, ctx) => {
      let v = convert(scope, loc, ctx);
      if (!v.length && fallback) v = convert(scope, fallback, ctx);
      if (!v.length && spec.default !== undefined) return [structuredClone(spec.default)];
      return v.map(wrap);
    }),
  };
}

/** A condition compiled to a test on the scope. */
function compileCondition(c: Condition): (scope: Scope) => boolean {
  const loc = parseLoc(c.field);
  const inSet = c.in ? new Set(c.in) : undefined;
  const notSet = c.not ? new Set(c.not) : undefined;
  return (scope) => {
    const v = read(scope, loc);
    if (c.present !== undefined && present(v) !== c.present) return false;
    if (inSet && !inSet.has(v)) return false;
    if (notSet && notSet.has(v)) return false;
    return true;
  };
}

type Converter = (rep: Hl7Repetition | undefined, text: string, loc: Loc, ctx: Ctx) => unknown;

/** The converter for one value, chosen once from the rule's `type` / `table`. */
function compileConverter(spec: ElementSpec): Converter {
  if (spec.table && !spec.type) {
    const as = spec.as ?? 'code';
    return (_rep, text, loc, ctx) => {
      if (!present(text)) return undefined;
      const mapped = ctx.codes.lookup(spec.table!, text);
      const coding = mapped ?? lookupCode(spec.table!, text, loc.text, ctx);
      // an unmapped code cannot fill a `code` element (it would not be valid FHIR): it is reported and left out
      if (as === 'code') return mapped?.code;
      return as === 'Coding' ? coding : { coding: [coding] };
    };
  }
  const type = spec.type ?? 'string';
  switch (type) {
    case 'string':
      return (_r, text) => (present(text) ? text : undefined);
    case 'integer':
      return (_r, text) => (/^-?\d+$/.test(text) ? Number(text) : undefined);
    case 'decimal':
      return (_r, text) => (/^-?\d+(\.\d+)?$/.test(text) ? Number(text) : undefined);
    case 'boolean':
      return (_r, text) => (text === 'Y' ? true : text === 'N' ? false : undefined);
    case 'date':
    case 'dateTime':
    case 'instant':
      return (_r, text, loc, ctx) => {
        if (!present(text)) return undefined;
        const v = dtm(text, type);
        if (!v) ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: "${text}" is not an HL7 date/time; left out`, where: loc.text }));
        return v;
      };
    case 'CX':
      return (rep, _t, _l, ctx) => cx(rep, ctx);
    case 'XPN':
      return (rep, _t, _l, ctx) => xpn(rep, ctx);
    case 'XAD':
      return (rep, _t, _l, ctx) => xad(rep, ctx);
    case 'XTN':
      return (rep) => xtn(rep, spec.use as 'home' | 'work' | undefined);
    case 'CWE':
      return (rep, _t, loc, ctx) => {
        const cc = cwe(rep);
        if (!cc || !spec.table) return cc;
        const code = comp(rep, 1);
        const mapped = ctx.codes.lookup(spec.table, code);
        if (mapped) cc.coding = [mapped, ...(cc.coding ?? []).filter((c) => c.code !== mapped.code)];
        else if (present(code)) {
          const src = ctx.codes.sourceSystem(spec.table);
          cc.coding = (cc.coding ?? []).map((c) => (c.system ? c : { ...c, ...(src ? { system: src } : {}) }));
          ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: code "${code}" has no mapping in mappings/codes (${spec.table}); kept as sent`, where: loc.text }));
        }
        return cc;
      };
    case 'XCN':
      return (rep, _t, _l, ctx) => {
        const parts = xcnParts(rep, ctx);
        return parts && spec.ref === 'Practitioner' ? practitionerRef(parts, ctx) : parts?.name;
      };
    case 'XON':
      return (rep, _t, _l, ctx) => {
        const parts = xonParts(rep, ctx);
        return parts && spec.ref === 'Organization' ? organizationRef(parts, ctx) : parts?.name;
      };
    default:
      throw new Error(`unknown type ${type} (known: string, integer, decimal, boolean, date, dateTime, instant, CX, XPN, XAD, XTN, CWE, XCN, XON)`);
  }
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
/** The character set a sending facility uses when it leaves MSH-18 empty (`charset` in mappings/facilities.yaml). */
export function facilityCharset(facility: string): string | undefined {
  return loadMappings().facilities.get(facility.trim().toUpperCase())?.charset;
}

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

/** PRD segments of the group with PRD-1 = role (RP referring, RT referred-to) → references. */
function providerRefs(roleCode: string, scope: Scope, ctx: Ctx): Reference[] {
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
