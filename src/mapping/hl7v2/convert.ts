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
import type { Identifier, Organization, Patient, Reference, Resource } from '@medplum/fhirtypes';
import type { OperationOutcomeIssue } from '../../fhir/types.js';
import { OutcomeError, issue } from '../../fhir/outcome.js';
import { SYSTEMS, checkIsikukood, maskIsikukood } from '../../fhir/identifiers.js';
import type { PlanEvent, TeamChange } from '../../county/contribution.js';
import { ROLES } from '../../county/roles.js';
import type { Hl7Message, Hl7Repetition, Hl7Segment } from '../../hl7v2/message.js';
import { comp, dtm, present, xcnParts } from '../datatypes.js';
import { groupOf, parseLoc, read, reps, setPath, type Built, type CompiledElement, type CompiledRule, type Ctx, type MessageFile, type Pending, type Scope } from './language.js';
import { compileCondition, conditionFields, conditionWarnings, loadMappings } from './load.js';
import { patientId, practitionerRef, recipeId, senderOrganization } from './ids.js';
import { roleChange } from './special.js';

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
  event: { type: string; trigger: string; structure: string; plan: PlanEvent; occurredAt?: string };
  encounterId?: string;
  merge?: { retiredPatientId: string };
  team: TeamChange[];
  /** flags the message file raised (for the coordination rules' `flag:` tests) */
  flags: string[];
  /** segments present in the message (for the coordination rules' segment tests) */
  segments: string[];
  /** errors (content is wrong → AE), warnings and information (unused segments and fields) */
  issues: OperationOutcomeIssue[];
  unused: string[];
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
  // MSH-9.3 names the structure; when it is empty or names one without a file (ADT^A04^ADT_A04), the message file of
  // the type that lists the trigger (the message files' events are table 0354 for what is supported)
  // (or names one that does not route this trigger, as senders who write ADT_A01 for every ADT do)
  const byTrigger = () => [...m.messages.values()].find((f) => f.structure.startsWith(`${msg.messageType}_`) && msg.triggerEvent in f.events)?.structure;
  const named = m.messages.get(msg.structure);
  const structure = named && msg.triggerEvent in named.events ? msg.structure : (byTrigger() ?? (named ? msg.structure : undefined));
  const mf = structure ? m.messages.get(structure) : undefined;
  if (!mf) {
    throw new OutcomeError('unsupported', `message type ${msg.messageType}^${msg.triggerEvent} (${msg.structure || 'no MSH-9.3'}) is not supported; supported: ${[...m.messages.keys()].join(', ')}`, 'MSH-9');
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
  const whole: Scope = { msg, seg: msh, withSegs: evn ? [evn] : [], group: msg.segments };
  const occurredAt = (mf.eventTime ?? m.common.eventTime).map((l) => dtm(read(whole, parseLoc(l)), 'dateTime')).find((v) => v !== undefined);
  const organization = senderOrganization(msh, ctx);
  if (organization) {
    ctx.produced.push(organization);
    ctx.senderId = organization.id;
  }
  const authorParts = m.common.author ? xcnParts(reps(whole, parseLoc(m.common.author))[0], ctx) : undefined;
  const author = authorParts ? practitionerRef(authorParts, ctx) : undefined;

  const built: Built[] = [];
  const pending: Pending[] = [];
  const team: TeamChange[] = [];
  const usedSegments = new Set<number>([0]);
  if (evn) usedSegments.add(evn.index);
  const unused: string[] = [];
  /** per segment a rule built from (or read as a companion), the fields the rules read */
  const readFields = new Map<Hl7Segment, Set<number>>();

  for (const route of mf.resources) {
    const rule = m.rules.get(route.rule)!;
    const primaries = msg.segments.filter((s) => s.name === route.segment);
    // `each`: one resource per repetition of a field, the rule reading the field as if it held only that repetition
    const eachLoc = route.each ? parseLoc(route.each) : undefined;
    for (const seg of route.repeat ? primaries : primaries.slice(0, 1)) {
      const group = groupOf(msg, seg, route.segment);
      // companions: the segments right after the primary one whose names `with` lists (PD1 after PID, NTE after OBX)
      const withSegs: Hl7Segment[] = [];
      for (let i = seg.index + 1; i < msg.segments.length && route.with?.includes(msg.segments[i].name); i++) withSegs.push(msg.segments[i]);
      // `also`: segments anywhere in the primary one's group (SIU: the AIS/AIL/AIP resources after SCH)
      withSegs.push(...(route.also ?? []).flatMap((n) => group.filter((s) => s.name === n && !withSegs.includes(s))));
      // `context`: the nearest such segment before it — with `contextInGroup`, only back to the previous segment of
      // the primary's name (an ORC belongs to its own OBR group, not to the next one)
      const before = [...msg.segments.slice(0, seg.index)].reverse();
      const reach = route.contextInGroup ? before.slice(0, before.findIndex((s) => s.name === seg.name) + 1 || before.length) : before;
      const context = (route.context ?? []).map((n) => reach.find((s) => s.name === n)).filter((s): s is Hl7Segment => !!s);
      const instances = eachLoc
        ? (seg.fields[eachLoc.field] ?? []).filter((rep) => rep.some((c) => c.some(present))).map((rep): Hl7Segment => ({ ...seg, fields: seg.fields.map((f, n) => (n === eachLoc.field ? [rep] : f)) }))
        : [seg];
      for (const at of instances) {
        const scope: Scope = { msg, seg: at, withSegs: [...withSegs, ...context], group };
        if (route.when && !compileCondition(route.when)(scope)) {
          // a value the route does not accept, where its condition says `otherwise: warn`: said, and the field read
          const warned = conditionWarnings(route.when, scope, ctx, `no ${route.rule} made`).map(parseLoc).filter((l) => l.segment === seg.name);
          if (warned.length) {
            usedSegments.add(seg.index);
            readFields.set(seg, new Set([...(readFields.get(seg) ?? []), ...warned.map((l) => l.field)]));
          }
          continue;
        }
        usedSegments.add(seg.index);
        withSegs.forEach((s) => usedSegments.add(s.index));
        for (const s of context) if (rule.used.has(s.name)) usedSegments.add(s.index); // read through `context`
        if (rule.role) {
          team.push(...roleChange(rule, scope, ctx));
          continue;
        }
        // the fields of this segment (and its companions) this rule reads; a field no rule reads is reported below
        const unusedFields = (): void => {
          for (const x of [seg, ...withSegs]) readFields.set(x, new Set([...(readFields.get(x) ?? []), ...(rule.used.get(x.name) ?? [])]));
        };
        if (rule.part) {
          // the nearest resource of the rule's type built before this segment (the Patient from PID for NK1 contacts,
          // the Encounter from PV1 for the ROL of the visit), else the one built from PID (an NK1 a sender put first);
          // none — the part has nowhere to go (a ROL before PV1 is not the visit's)
          const ofType = built.filter((b) => b.resource.resourceType === rule.resourceType);
          const subject = (ofType.filter((b) => b.segment.index < seg.index).pop() ?? ofType.find((b) => b.segment.name === 'PID'))?.resource;
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
  }
  // flags for the coordination rules: a condition on the first segment it names (the segment and field count as read)
  const flags: string[] = [];
  for (const [name, cond] of Object.entries(mf.flags ?? {})) {
    const loc = parseLoc(conditionFields(cond)[0]);
    const seg = msg.segments.find((s) => s.name === loc.segment);
    if (!seg) continue;
    usedSegments.add(seg.index);
    readFields.set(seg, new Set([...(readFields.get(seg) ?? []), loc.field]));
    if (compileCondition(cond)({ msg, seg, withSegs: [], group: [seg] })) flags.push(name);
  }
  for (const s of msg.segments) {
    const read = readFields.get(s);
    if (read) for (let n = 1; n < s.fields.length; n++) if (!read.has(n) && hasContent(s.fields[n])) unused.push(`${s.name}-${n}`);
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
  if (ev.appointmentStatus) for (const b of built) if (b.resource.resourceType === 'Appointment') (b.resource as { status?: string }).status = ev.appointmentStatus;
  if (ev.conditionStatus) {
    for (const b of built) if (b.resource.resourceType === 'Condition') (b.resource as { verificationStatus?: unknown }).verificationStatus = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: ev.conditionStatus }] };
  }

  const resources = keepInvariants(dedupe([...ctx.produced, ...built.map((b) => b.resource)]).filter((r) => r !== patient), patient, ctx);
  // what the mapping leaves on purpose says why (the message file's `leaves`); the rest is a gap not yet mapped
  for (const u of unused) {
    const why = mf.leaves?.[u] ?? mf.leaves?.[u.split('-')[0]];
    ctx.issues.push(issue({ severity: 'information', issueCode: 'informational', text: why ? `${u} is left on purpose: ${why}` : `${u} was not mapped`, where: u }));
  }
  return {
    patient,
    patientId: patient.id!,
    careTeamCandidates: team.filter((t) => t.role.coding?.[0].code !== ROLES.generalPractitioner.code),
    resources,
    organization,
    author,
    event: { type: msg.messageType, trigger: msg.triggerEvent, structure: structure!, plan: ev.plan, occurredAt },
    encounterId: encounter?.id,
    merge: retired ? { retiredPatientId: retired.id! } : undefined,
    team,
    flags,
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


/**
 * What FHIR requires of the resources a message makes, kept where the sender's data would break it, each change said
 * as a warning: a Period ending before it starts loses its end (not the Encounter's: its times drive the plan, so
 * they are refused as before); an Appointment's end comes from its duration when only the start is sent, and without
 * both times (app-2) it is proposed, not booked (app-3); the same identifier twice is kept once; a RelatedPerson with
 * the patient's own isikukood is the patient, not a relative, and an isikukood whose check digit fails is not kept
 * as one.
 */
function keepInvariants(resources: Resource[], patient: Patient, ctx: Ctx): Resource[] {
  const warn = (text: string, where: string): void => void ctx.issues.push(issue({ severity: 'warning', text, where }));
  if (patient.identifier) patient.identifier = patient.identifier.filter((i, n, all) => all.findIndex((j) => j.system === i.system && j.value === i.value) === n);
  const own = new Set((patient.identifier ?? []).filter((i) => i.system === SYSTEMS.isikukood).map((i) => i.value));
  const out: Resource[] = [];
  for (const r of resources) {
    const rec = r as unknown as Record<string, unknown>;
    if (Array.isArray(rec.identifier)) {
      const seen = new Set<string>();
      rec.identifier = (rec.identifier as Identifier[]).filter((i) => {
        const k = `${i.system ?? ''}|${i.value ?? ''}`;
        if (seen.has(k)) return false;
        seen.add(k);
        if (r.resourceType === 'RelatedPerson' && i.system === SYSTEMS.isikukood && i.value && !checkIsikukood(i.value).valid) {
          warn(`RelatedPerson: isikukood ${maskIsikukood(i.value)} is not valid (${checkIsikukood(i.value).reason}); not kept as an isikukood`, 'PID-21');
          return false;
        }
        return true;
      });
    }
    if (r.resourceType === 'RelatedPerson' && (rec.identifier as Identifier[] | undefined)?.some((i) => i.system === SYSTEMS.isikukood && own.has(i.value))) {
      warn('a relative named with the patient\'s own isikukood is the patient; left out', 'PID-21');
      continue;
    }
    if (r.resourceType !== 'Encounter') for (const [k, x] of Object.entries(rec)) orderPeriods(x, `${r.resourceType}.${k}`, warn);
    if (r.resourceType === 'Appointment') appointmentTimes(rec, warn);
    out.push(r);
  }
  return out;
}

/** Every Period (an object with start and end) within `v` that ends before it starts loses its end. */
function orderPeriods(v: unknown, at: string, warn: (text: string, where: string) => void): void {
  if (Array.isArray(v)) return v.forEach((x, i) => orderPeriods(x, `${at}[${i}]`, warn));
  if (!v || typeof v !== 'object') return;
  const p = v as Record<string, unknown>;
  if (typeof p.start === 'string' && typeof p.end === 'string' && Date.parse(p.end) < Date.parse(p.start)) {
    warn(`${at}: ends (${p.end}) before it starts (${p.start}); the end is left out`, at);
    delete p.end;
  }
  for (const [k, x] of Object.entries(p)) orderPeriods(x, `${at}.${k}`, warn);
}

function appointmentTimes(a: Record<string, unknown>, warn: (text: string, where: string) => void): void {
  if (typeof a.start === 'string' && a.end === undefined && typeof a.minutesDuration === 'number') a.end = plusMinutes(a.start, a.minutesDuration);
  if (typeof a.start === 'string' && typeof a.end === 'string' && Date.parse(a.end) < Date.parse(a.start)) {
    warn(`Appointment: ends (${a.end}) before it starts (${a.start}); its times are left out`, 'TQ1-8');
    delete a.start;
    delete a.end;
  }
  if ((a.start === undefined) !== (a.end === undefined)) {
    warn('Appointment: a start without an end (or an end without a start); the time is left out', 'TQ1-7');
    delete a.start;
    delete a.end;
  }
  if (a.start === undefined && !['proposed', 'cancelled', 'waitlist'].includes(String(a.status))) a.status = 'proposed';
}

/** An instant plus minutes, written in the instant's own offset. */
function plusMinutes(instant: string, minutes: number): string {
  const m = /([+-])(\d{2}):(\d{2})$|Z$/.exec(instant);
  const offset = m && m[1] ? (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) : 0;
  const local = new Date(Date.parse(instant) + (minutes + offset) * 60_000).toISOString().slice(0, 19);
  return m && m[1] ? `${local}${m[0]}` : `${local}Z`;
}
