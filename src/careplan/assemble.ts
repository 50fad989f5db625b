/**
 * Shared care plan assembly: every contribution (an HL7 v2 message, a FHIR submission, a municipal record)
 * meets in ONE CarePlan and ONE CareTeam per person, each written with Provenance pointing at the inbox entry.
 *
 * The plan only references contributions (MCC eCare Plan pattern: `activity.reference`, `addresses`, `goal`,
 * `supportingInfo`, `contributor`; `activity.detail` is not used). Plan and team ids derive from the Patient
 * id, and each person's contributions are serialised by a transaction-scoped lock, so the plan is never forked
 * and concurrent contributions never lose an activity. Writing identical content makes no new version, so
 * replaying an input changes nothing.
 *
 * Longer than most files here on purpose: the steps (identity, plan, team, rules, Provenance) and their order under
 * the person's lock are the assembly's correctness argument, and are read together.
 *
 * @see https://hl7.org/fhir/R4/careplan.html, https://hl7.org/fhir/R4/careteam.html, https://hl7.org/fhir/R4/provenance.html
 * @see IHE PCC Dynamic Care Planning / Dynamic Care Team Management; HL7 MCC eCare Plan IG
 */
import crypto from 'node:crypto';
import type {
  CarePlan,
  CareTeam,
  CareTeamParticipant,
  CodeableConcept,
  Condition,
  Encounter,
  Organization,
  Patient,
  Provenance,
  Reference as FhirReference,
  RelatedPerson,
  Resource,
  ServiceRequest,
  Task,
} from '@medplum/fhirtypes';
import type { Writer } from '../store/writer.js';
import { OutcomeError, toOutcomeError } from '../fhir/outcome.js';
import type { UnitOfWork } from '../store/unit-of-work.js';
import { deterministicId, oneOffId } from '../fhir/identifiers.js';
import { municipalityOfResidence, municipalityOrganization } from '../county/directory.js';
import type { Contribution, TeamChange } from '../county/contribution.js';
import { ruleBook, type Party, type RuleAction, type RuleFacts } from './rules.js';
import { resolvePeople } from './identity.js';
import { ROLES, role } from '../county/roles.js';
import { PROFILE_BASE } from '../fhir/profiles.js';

/** A reference to any resource type (the plan and team point at many kinds). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reference = FhirReference<any>;

export const CARE_COORDINATION_CATEGORY: CodeableConcept = {
  coding: [{ system: 'http://loinc.org', code: 'LA28865-6', display: 'Longitudinal care-coordination focused care team' }],
};
export const INBOX_SYSTEM = 'urn:care-gateway:inbox';

export interface AssemblyResult {
  patientId: string;
  planId: string;
  teamId: string;
  /** version-specific references of everything written (unchanged resources are not listed) */
  written: string[];
}

const REQUEST_FINAL = new Set(['revoked', 'completed', 'entered-in-error']);
const TASK_FINAL = new Set(['cancelled', 'rejected', 'failed', 'completed', 'entered-in-error']);

export function planIdFor(patientId: string): string {
  return deterministicId('CarePlan', 'shared', patientId);
}
export function teamIdFor(patientId: string): string {
  return deterministicId('CareTeam', 'shared', patientId);
}

const refTo = (r: Resource): Reference => ({ reference: `${r.resourceType}/${r.id}` });
const versionRef = (r: Resource): string => `${r.resourceType}/${r.id}/_history/${r.meta?.versionId}`;

function addRef(list: Reference[] | undefined, ref: Reference): Reference[] {
  const l = list ?? [];
  return l.some((x) => x.reference === ref.reference) ? l : [...l, ref];
}

/** Runs one contribution inside the caller's transaction. */
export async function assemble(w: Writer, contribution: Contribution, opts: { resolved?: boolean } = {}): Promise<AssemblyResult> {
  // the person as stored: a contribution naming them by another identifier joins their Patient (identity.ts)
  const c = opts.resolved ? contribution : (await resolvePeople(w.tx, [contribution]))[0];
  const patientId = c.patient.id;
  if (!patientId) throw new OutcomeError('fault', 'contribution without a patient id');
  await w.lockKeys(planLocks(c));

  const created: Resource[] = [];
  const updated: Resource[] = [];
  const put = async <T extends Resource>(r: T): Promise<T> => {
    const res = await w.update(r);
    if (res.outcome === 'created') created.push(res.resource);
    else if (res.outcome === 'updated') updated.push(res.resource);
    return res.resource;
  };

  // 1. The contributed resources, written together in a few set-based statements — except state an older
  //    event would overwrite: a message that arrives late does not undo a newer one (EVN-2/EVN-6 order).
  const givenPatient = c.patientStub ? ((await w.readOptional('Patient', patientId)) as Patient | undefined) ?? c.patient : c.patient;
  const batch = c.patientStub
    ? [...(c.organization ? [c.organization] : []), givenPatient, ...(await byEventTime(w, c.resources, c.occurredAt))]
    : await byEventTime(w, [...(c.organization ? [c.organization] : []), c.patient, ...c.resources], c.occurredAt);
  const results = await w.updateMany(batch);
  for (const res of results) {
    if (res.outcome === 'created') created.push(res.resource);
    else if (res.outcome === 'updated') updated.push(res.resource);
  }
  const org = c.organization ? (results[0].resource as Organization) : undefined;
  const patient = results[c.organization ? 1 : 0].resource as Patient;
  const written: Resource[] = results.slice(c.organization ? 2 : 1).map((r) => r.resource);

  const planId = planIdFor(patientId);
  const teamId = teamIdFor(patientId);
  const known = await w.readMany([
    ['CarePlan', planId],
    ['CareTeam', teamId],
  ]);
  const existingPlan = known.get(`CarePlan/${planId}`) as CarePlan | undefined;
  const existingTeam = known.get(`CareTeam/${teamId}`) as CareTeam | undefined;
  // what the assembly derives (municipality, rule-made requests, team, plan) is written together at the end
  const deferred: Resource[] = [];
  const defer = <T extends Resource>(r: T): T => {
    deferred.push(r);
    return r;
  };
  const now = new Date().toISOString();
  let plan: CarePlan = existingPlan ?? {
    resourceType: 'CarePlan',
    id: planId,
    meta: { profile: [`${PROFILE_BASE}shared-careplan`] },
    status: 'active',
    intent: 'plan',
    category: [CARE_COORDINATION_CATEGORY],
    title: 'Shared care plan',
    subject: refTo(patient),
    period: { start: c.occurredAt ?? now },
    created: now,
    careTeam: [{ reference: `CareTeam/${teamId}` }],
  };
  let team: CareTeam = existingTeam ?? {
    resourceType: 'CareTeam',
    id: teamId,
    meta: { profile: [`${PROFILE_BASE}shared-careteam`] },
    status: 'active',
    category: [CARE_COORDINATION_CATEGORY],
    name: 'Shared care team',
    subject: refTo(patient),
    period: { start: c.occurredAt ?? now },
    participant: [{ role: [role(ROLES.patient)], member: refTo(patient) }],
  };

  // 2. The municipality of residence (and a move between municipalities).
  const municipality = municipalityOfResidence(patient);
  const municipalityOrg = municipality ? defer(municipalityOrganization(municipality)) : undefined;

  const parties: Partial<Record<Party, Reference>> = {
    'general-practitioner': patient.generalPractitioner?.[0],
    'municipality-of-residence': municipalityOrg ? refTo(municipalityOrg) : undefined,
    hospital: c.channel !== 'social-care' && org ? refTo(org) : undefined,
  };

  // 3. Coordination rules for the event.
  const ruleResources = await applyRules(w, c, patient, parties, put, defer);

  // 4. What the plan references.
  const activityRefs: Reference[] = [];
  for (const r of [...written, ...ruleResources.added]) {
    switch (r.resourceType) {
      case 'ServiceRequest':
      case 'Appointment':
        activityRefs.push(refTo(r));
        break;
      case 'Task':
        // a Task that carries out a ServiceRequest is reached through Task.focus; a free-standing one is an activity
        if (!(r as Task).focus) activityRefs.push(refTo(r));
        break;
      case 'Condition':
        // what the plan addresses; a cause of death (HL7 v2 PDA-1) is what happened, not something to address
        plan = isDeathDiagnosis(r as Condition) ? { ...plan, supportingInfo: addRef(plan.supportingInfo, refTo(r)) } : { ...plan, addresses: addRef(plan.addresses, refTo(r)) };
        break;
      case 'Goal':
        plan = { ...plan, goal: addRef(plan.goal, refTo(r)) };
        break;
      case 'Encounter':
      case 'Observation':
      case 'DocumentReference':
      case 'AllergyIntolerance':
      case 'DiagnosticReport':
      case 'Procedure':
        plan = { ...plan, supportingInfo: addRef(plan.supportingInfo, refTo(r)) };
        break;
      default:
    }
  }
  const activity = [...(plan.activity ?? [])];
  for (const ref of activityRefs) if (!activity.some((a) => a.reference?.reference === ref.reference)) activity.push({ reference: ref });
  const revoked = new Set(ruleResources.revoked.map((r) => `${r.resourceType}/${r.id}`));
  plan = { ...plan, activity: activity.filter((a) => !revoked.has(a.reference?.reference ?? '')) };
  if (plan.activity?.length === 0) delete plan.activity;
  if (org) plan = { ...plan, contributor: addRef(plan.contributor, refTo(org)) };
  if (c.author) plan = { ...plan, contributor: addRef(plan.contributor, { reference: c.author.reference, display: c.author.display }) };

  // 5. The care team.
  const changes: TeamChange[] = [...(c.team ?? [])];
  if (parties['general-practitioner']) changes.push({ member: parties['general-practitioner'], role: role(ROLES.generalPractitioner), start: c.occurredAt });
  if (municipalityOrg) changes.push({ member: refTo(municipalityOrg), role: role(ROLES.municipalityOfResidence), start: c.occurredAt });
  // a municipality deciding on a social service for someone who does not (or not known to) live there
  if (c.channel === 'social-care' && org && org.id !== municipalityOrg?.id) changes.push({ member: refTo(org), role: role(ROLES.municipalSocialServices), start: c.occurredAt });
  for (const r of written) {
    if (r.resourceType === 'RelatedPerson') changes.push(relatedPersonParticipant(r as RelatedPerson));
    if (r.resourceType === 'Encounter') changes.push(...encounterParticipants(r as Encounter, org));
  }
  team = applyTeamChanges(team, changes, c.occurredAt ?? now);
  // a new GP: the former one's participation ends (with it the access it gave)
  const gpRef = parties['general-practitioner']?.reference;
  if (gpRef) team = endOtherParticipants(team, ROLES.generalPractitioner.code, gpRef, c.occurredAt ?? now);
  if (municipalityOrg) {
    // a move: the old municipality leaves the team, and the open work it owns for this person goes to the new one
    const previous = openParticipants(team, ROLES.municipalityOfResidence.code).filter((r) => r !== `Organization/${municipalityOrg.id}`);
    team = endOtherParticipants(team, ROLES.municipalityOfResidence.code, `Organization/${municipalityOrg.id}`, c.occurredAt ?? now);
    if (previous.length) await handOver(w, patient, previous, refTo(municipalityOrg), municipality!.name, c.occurredAt ?? now, put);
  }

  // 6. A merge moves everything onto the surviving patient.
  if (c.merge) ({ plan, team } = await mergeInto(w, c.merge.retiredPatientId, patient, plan, team, put));

  for (const res of await w.updateMany([...deferred, team, plan])) {
    if (res.outcome === 'created') created.push(res.resource);
    else if (res.outcome === 'updated') updated.push(res.resource);
  }

  // 7. One Provenance for everything this contribution wrote. Its activity is CREATE when the contribution only
  // created resources and UPDATE when it changed any existing one; which targets are new shows in their version
  // references (`…/_history/1`). One Provenance per activity would double the provenance writes of most rows.
  const agentWho = c.author ?? (org ? refTo(org) : undefined);
  const provenances: Provenance[] = [];
  if (created.length + updated.length > 0) {
    const targets = [...created, ...updated].map(versionRef);
    const activityCode = updated.length > 0 ? 'UPDATE' : 'CREATE';
    provenances.push({
      resourceType: 'Provenance',
      id: oneOffId('Provenance', c.inboxId, ...targets),
      target: targets.map((reference) => ({ reference })),
      recorded: now,
      activity: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-DataOperation', code: activityCode }] },
      agent: [
        {
          type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type', code: 'author' }] },
          who: agentWho ?? { display: c.description },
          ...(c.author && org ? { onBehalfOf: refTo(org) } : {}),
        },
      ],
      entity: [{ role: 'source', what: { identifier: { system: INBOX_SYSTEM, value: c.inboxId }, display: c.description } }],
    });
  }
  for (const res of await w.updateMany(provenances, { expectNew: true })) if (res.outcome !== 'unchanged') created.push(res.resource);

  return { patientId, planId, teamId, written: [...created, ...updated].map(versionRef) };
}

/** The per-person locks a contribution takes (its patient, and the retired one of a merge). */
function planLocks(c: Contribution): string[] {
  return [c.patient.id, c.merge?.retiredPatientId].filter((x): x is string => !!x).map((id) => `plan|${id}`);
}

/** What assembling a contribution will read: read for a whole batch in one statement beforehand. */
export function prefetchKeys(c: Contribution): [string, string][] {
  const patientId = c.patient.id!;
  const keys: [string, string][] = [
    ['Patient', patientId],
    ['CarePlan', planIdFor(patientId)],
    ['CareTeam', teamIdFor(patientId)],
  ];
  if (c.organization?.id) keys.push(['Organization', c.organization.id]);
  for (const r of c.resources) if (r.id) keys.push([r.resourceType, r.id]);
  const m = municipalityOfResidence(c.patient);
  if (m) keys.push(['Organization', municipalityOrganization(m).id!]);
  if (c.event !== 'discharge-cancelled' && c.event !== 'admission-cancelled') {
    const { applicable, idFor } = rulePlan(c);
    for (const rule of applicable) for (const [i, a] of rule.add.entries()) keys.push([a.resource, idFor(rule.id, i, a)]);
  }
  return keys;
}

/**
 * Assembles several contributions in one unit of work: every person's plan locked and everything the batch reads
 * fetched in one statement each, then each contribution in memory, then one flush. A contribution whose content is
 * refused (validation, a state rule) is undone alone and returned as its error; the others are kept. Errors of
 * the store itself ('fault', 'busy': e.g. a concurrent change found at flush) fail the whole unit. `between`
 * is awaited between two contributions (background work giving way to requests being answered).
 */
export async function assembleMany(w: UnitOfWork, contributions: Contribution[], opts: { between?: () => Promise<void> } = {}): Promise<(AssemblyResult | OutcomeError)[]> {
  const cs = await resolvePeople(w.tx, contributions);
  await w.lockKeys(cs.flatMap(planLocks));
  await w.prefetch(cs.flatMap(prefetchKeys));
  const out: (AssemblyResult | OutcomeError)[] = [];
  for (const [k, c] of cs.entries()) {
    // with everything read ahead, assembling runs without I/O: a batch would hold the event loop for all of it
    if (opts.between && k > 0) await opts.between();
    const m = w.mark();
    try {
      out.push(await assemble(w, c, { resolved: true }));
      w.release(m);
    } catch (err) {
      const e = toOutcomeError(err);
      if (e.category === 'fault' || e.category === 'busy') throw err;
      w.restore(m);
      out.push(e);
    }
  }
  if (opts.between && cs.length > 0) await opts.between();
  await w.flush();
  return out;
}

/** Resources whose state follows events (demographics, the visit) carry the time of the event that set it. */
export const EVENT_TIME_EXTENSION = 'https://care-gateway.ee/fhir/StructureDefinition/source-event-time';
const EVENT_ORDERED = new Set(['Patient', 'Encounter']);

function eventTimeOf(r: Resource | undefined): number | undefined {
  const v = r?.meta?.extension?.find((e) => e.url === EVENT_TIME_EXTENSION)?.valueDateTime;
  return v ? Date.parse(v) : undefined;
}

function withoutEventTime(r: Resource): string {
  const { meta, ...rest } = r;
  return JSON.stringify({ ...rest, ext: meta?.extension?.filter((e) => e.url !== EVENT_TIME_EXTENSION) ?? [] });
}

/**
 * Applies event-time order to Patient and Encounter: the stored version stays when it was set by a later event,
 * or when only the event time would change; otherwise the new state is stamped with its event time.
 */
async function byEventTime(w: Writer, batch: Resource[], occurredAt: string | undefined): Promise<Resource[]> {
  const at = occurredAt ? Date.parse(occurredAt) : NaN;
  if (Number.isNaN(at)) return batch;
  const ordered = batch.filter((r) => EVENT_ORDERED.has(r.resourceType) && r.id);
  const stored = await w.readMany(ordered.map((r) => [r.resourceType, r.id!] as [string, string]));
  return batch.map((r) => {
    if (!EVENT_ORDERED.has(r.resourceType)) return r;
    const cur = stored.get(`${r.resourceType}/${r.id}`);
    const stamped = {
      ...r,
      meta: { ...r.meta, extension: [...(r.meta?.extension ?? []).filter((e) => e.url !== EVENT_TIME_EXTENSION), { url: EVENT_TIME_EXTENSION, valueDateTime: occurredAt }] },
    } as Resource;
    if (!cur) return stamped;
    const curAt = eventTimeOf(cur);
    const later = curAt !== undefined && curAt > at; // a later event already set this state
    if (r.resourceType === 'Patient') {
      // HL7 v2: what a message does not carry is unknown, not removed (a REF^I12 without PD1 keeps the GP).
      // Per top-level element the later event wins; an element only one of them knows is kept.
      const { meta: _m, ...known } = cur;
      const { meta: _n, ...incoming } = r;
      const merged = (later ? { ...incoming, ...known, meta: cur.meta } : { ...known, ...incoming, meta: stamped.meta }) as Resource;
      return withoutEventTime(merged) === withoutEventTime(cur) ? cur : merged;
    }
    if (withoutEventTime(cur) === withoutEventTime(r)) return cur; // nothing but the time would change
    if (later) return cur;
    return stamped;
  });
}

/** A cause of death: category SNOMED CT 16100001 "Death diagnosis" (VRDR; the HL7 v2 mapping of PDA-1). */
function isDeathDiagnosis(r: Condition): boolean {
  return (r.category ?? []).some((k) => k.coding?.some((x) => x.system === 'http://snomed.info/sct' && x.code === '16100001'));
}

/**
 * Did the person die, as far as this contribution tells? A Patient deceased (PID-29/30, Patient.deceased[x]) or a
 * cause of death (PDA-1). (A visit that ended in death says so in its disposition, which no home set contains.)
 */
function diedIn(c: Contribution): boolean {
  return [c.patient, ...c.resources].some(
    (r) =>
      (r.resourceType === 'Patient' && ((r as Patient).deceasedBoolean === true || !!(r as Patient).deceasedDateTime)) ||
      (r.resourceType === 'Condition' && isDeathDiagnosis(r as Condition)),
  );
}

/** The rules a contribution triggers, the facts they saw, and the ids the resources they add get. */
function rulePlan(c: Contribution) {
  const book = ruleBook();
  const encounter = c.encounterId ? (c.resources.find((r) => r.resourceType === 'Encounter' && r.id === c.encounterId) as Encounter | undefined) : undefined;
  const key = c.encounterId ?? c.inboxId;
  const idFor = (ruleId: string, i: number, a: RuleAction, generation = ''): string =>
    deterministicId(a.resource, 'rule', ruleId, String(i), key, generation);
  const facts: RuleFacts = {
    dispositionCodes: (encounter?.hospitalization?.dischargeDisposition?.coding ?? []).map((x) => x.code ?? '').filter(Boolean),
    // the person's conditions, not the causes of their death (a stroke that killed is no care need)
    conditionCodes: c.resources
      .filter((r): r is Condition => r.resourceType === 'Condition' && !isDeathDiagnosis(r))
      .flatMap((r) => (r.code?.coding ?? []).map((x) => x.code ?? ''))
      .filter(Boolean),
    segments: c.segments ?? [],
    flags: c.flags ?? [],
    deceased: diedIn(c),
  };
  const applicable = book.rules.filter((r) => r.on === c.event && r.applies(facts));
  return { book, encounter, idFor, applicable };
}

/** Adds the requests the rules call for, or revokes what a cancelled discharge had added. */
async function applyRules(
  w: Writer,
  c: Contribution,
  patient: Patient,
  parties: Partial<Record<Party, Reference>>,
  put: <T extends Resource>(r: T) => Promise<T>,
  defer: <T extends Resource>(r: T) => T,
): Promise<{ added: Resource[]; revoked: Resource[] }> {
  const { book, encounter, idFor, applicable } = rulePlan(c);
  const added: Resource[] = [];
  const revoked: Resource[] = [];
  const encounterRef = c.encounterId ? `Encounter/${c.encounterId}` : undefined;

  if (c.event === 'discharge-cancelled' || c.event === 'admission-cancelled') {
    // Revoke what the cancelled event's rules added for this encounter: their open requests and tasks.
    if (!encounterRef) return { added, revoked };
    const undone = c.event === 'discharge-cancelled' ? 'discharge' : 'admission';
    const codes = new Set(book.rules.filter((r) => r.on === undone).flatMap((r) => r.add.map((a) => a.code).filter(Boolean)));
    const requests = await w.search<ServiceRequest>({ resourceType: 'ServiceRequest', params: [['encounter', encounterRef], ['status', 'active,on-hold,draft']], count: 1000 });
    for (const sr of requests.resources) {
      if (!sr.code?.coding?.some((x) => x.system === book.codeSystem && codes.has(x.code))) continue;
      revoked.push(await put({ ...sr, status: 'revoked' }));
      const tasks = await w.search<Task>({ resourceType: 'Task', params: [['focus', `ServiceRequest/${sr.id}`]], count: 1000 });
      for (const t of tasks.resources) if (!TASK_FINAL.has(t.status)) revoked.push(await put({ ...t, status: 'cancelled' }));
    }
    return { added, revoked };
  }

  const start = c.occurredAt ?? new Date().toISOString();
  const existing = await w.readMany(applicable.flatMap((rule) => rule.add.map((a, i) => [a.resource, idFor(rule.id, i, a)] as [string, string])));
  for (const rule of applicable) {
    const made: Resource[] = [];
    for (const [i, a] of rule.add.entries()) {
      // the same event sent again lands on the same resource; after a cancellation (a final status) a new one is made
      const first = existing.get(`${a.resource}/${idFor(rule.id, i, a)}`) as ServiceRequest | Task | undefined;
      const id = first && (REQUEST_FINAL.has(first.status) || TASK_FINAL.has(first.status)) ? idFor(rule.id, i, a, c.inboxId) : idFor(rule.id, i, a);
      const code: CodeableConcept = {
        coding: [{ system: book.codeSystem, code: a.code, display: a.display }],
        text: a.displayEt ?? a.display,
      };
      const requester = a.requester ? parties[a.requester] : undefined;
      let r: ServiceRequest | Task;
      if (a.resource === 'ServiceRequest') {
        const performer = a.performer ? parties[a.performer] : undefined;
        r = {
          resourceType: 'ServiceRequest',
          id,
          status: 'active',
          intent: 'order',
          category: [{ coding: [{ system: book.codeSystem, code: 'care-coordination', display: 'Care coordination' }] }],
          code,
          subject: refTo(patient),
          ...(encounter ? { encounter: refTo(encounter) } : {}),
          authoredOn: start,
          ...(requester ? { requester } : {}),
          ...(performer ? { performer: [performer] } : {}),
          ...(a.occurrenceWithinDays !== undefined
            ? { occurrencePeriod: { start, end: new Date(Date.parse(start) + a.occurrenceWithinDays * 86_400_000).toISOString() } }
            : {}),
          ...(performer ? {} : { note: [{ text: `No ${a.performer} is known yet for this person; assign a performer.` }] }),
        };
      } else {
        const owner = a.owner ? parties[a.owner] : undefined;
        const focus = a.focus !== undefined ? made[a.focus] : undefined;
        r = {
          resourceType: 'Task',
          id,
          ...(focus && owner ? { meta: { profile: [`${PROFILE_BASE}referral-task`] } } : {}),
          status: 'requested',
          intent: 'order',
          code: { coding: [{ system: 'http://hl7.org/fhir/CodeSystem/task-code', code: 'fulfill' }] },
          ...(focus ? { focus: refTo(focus) } : {}),
          for: refTo(patient),
          ...(encounter ? { encounter: refTo(encounter) } : {}),
          authoredOn: start,
          ...(requester ? { requester } : {}),
          ...(owner ? { owner } : {}),
        };
      }
      const current = id === first?.id ? first : await w.readOptional<ServiceRequest | Task>(a.resource, id);
      // keep what others changed since (e.g. the GP accepted the task): only fill in what is missing
      const saved = defer(current ? ({ ...r, ...current } as Resource) : r);
      made.push(saved);
      added.push(saved);
    }
  }
  return { added, revoked };
}

function relatedPersonParticipant(rp: RelatedPerson): TeamChange {
  const codes = (rp.relationship ?? []).flatMap((cc) => cc.coding ?? []).map((x) => x.code);
  const r = codes.some((x) => x === 'GRD' || x === 'GUARD' || x === '58626002') ? ROLES.legalGuardian : ROLES.caregiver;
  return { member: refTo(rp), role: role(r), start: rp.period?.start, end: rp.period?.end };
}

/** The hospital's attending and discharging doctors, on behalf of the hospital. */
function encounterParticipants(e: Encounter, hospital: Organization | undefined): TeamChange[] {
  const out: TeamChange[] = [];
  for (const p of e.participant ?? []) {
    const types = (p.type ?? []).flatMap((t) => t.coding ?? []).map((x) => x.code);
    if (!p.individual?.reference?.startsWith('Practitioner/')) continue;
    if (!types.some((t) => t === 'ATND' || t === 'DIS')) continue;
    out.push({
      member: { reference: p.individual.reference, display: p.individual.display },
      role: role(ROLES.hospitalDoctor),
      onBehalfOf: hospital ? refTo(hospital) : undefined,
      start: e.period?.start,
    });
  }
  return out;
}

function participantKey(p: { member?: Reference; role?: CodeableConcept[] }): string {
  return `${p.member?.reference}|${p.role?.[0]?.coding?.[0]?.code}`;
}

/** Adds new participants, ends leaving ones; an existing open participation is kept as it is. */
export function applyTeamChanges(team: CareTeam, changes: TeamChange[], at: string): CareTeam {
  const participants: CareTeamParticipant[] = [...(team.participant ?? [])];
  const now = Date.now();
  // a participation is current until its end: one that ends in the future (a decision for a school year) is active
  const current = (p: CareTeamParticipant) => !p.period?.end || Date.parse(p.period.end) > now;
  for (const ch of changes) {
    const key = participantKey({ member: ch.member, role: [ch.role] });
    const open = participants.findIndex((p) => participantKey(p) === key && current(p));
    const ended = ch.end !== undefined && Date.parse(ch.end) <= now;
    if (open >= 0) {
      // the same participation again: its end is what the source says now (set, moved, or kept)
      if (ch.end && participants[open].period?.end !== ch.end) participants[open] = { ...participants[open], period: { ...participants[open].period, end: ch.end } };
      continue;
    }
    // a participation that has already ended is kept as history only when it was never recorded
    if (ended && participants.some((p) => participantKey(p) === key && p.period?.end === ch.end)) continue;
    participants.push({
      role: [ch.role],
      member: ch.member,
      ...(ch.onBehalfOf && ch.member.reference?.startsWith('Practitioner/') ? { onBehalfOf: ch.onBehalfOf } : {}),
      period: { start: ch.start ?? at, ...(ch.end ? { end: ch.end } : {}) },
    });
  }
  return { ...team, participant: participants };
}

/** The members whose participation in a role is open (no end). */
function openParticipants(team: CareTeam, roleCode: string): string[] {
  return (team.participant ?? []).filter((p) => p.role?.[0]?.coding?.[0]?.code === roleCode && !p.period?.end && p.member?.reference).map((p) => p.member!.reference!);
}

const TASK_OPEN = 'draft,requested,received,accepted,ready,in-progress,on-hold';

/**
 * After a move, the person's open Tasks owned by the old municipality (a needs assessment, a referral's worklist
 * entry) and its open ServiceRequests that name it as performer are handed to the new municipality, each with a
 * note saying from whom and when: the new municipality's worklist holds them, the old one's no longer does.
 */
async function handOver(
  w: Writer,
  patient: Patient,
  from: string[],
  to: Reference,
  toName: string,
  at: string,
  put: <T extends Resource>(r: T) => Promise<T>,
): Promise<void> {
  const note = (old: string) => ({ time: at, text: `Handed over from ${old} to ${toName} after the person moved (municipality of residence).` });
  for (const old of from) {
    const tasks = await w.search<Task>({ resourceType: 'Task', params: [['owner', old], ['patient', `Patient/${patient.id}`], ['status', TASK_OPEN]], count: 1000 });
    for (const t of tasks.resources) await put({ ...t, owner: to, note: [...(t.note ?? []), note(old)] });
    const requests = await w.search<ServiceRequest>({ resourceType: 'ServiceRequest', params: [['performer', old], ['patient', `Patient/${patient.id}`], ['status', 'draft,active,on-hold']], count: 1000 });
    for (const sr of requests.resources) {
      await put({ ...sr, performer: (sr.performer ?? []).map((p) => (p.reference === old ? to : p)), note: [...(sr.note ?? []), note(old)] });
    }
  }
}

/** Ends every open participation in a role except the given member's (e.g. the old municipality after a move). */
function endOtherParticipants(team: CareTeam, roleCode: string, keep: string, at: string): CareTeam {
  return {
    ...team,
    participant: (team.participant ?? []).map((p) =>
      p.role?.[0]?.coding?.[0]?.code === roleCode && p.member?.reference !== keep && !p.period?.end ? { ...p, period: { ...p.period, end: at } } : p,
    ),
  };
}

/**
 * A40 merge: every resource that points at the retired patient is re-pointed at the survivor; the retired
 * patient's plan content joins the survivor's plan (which `replaces` it) and the retired plan is revoked,
 * so exactly one active plan remains on the surviving patient. History keeps everything.
 */
async function mergeInto(
  w: Writer,
  retiredId: string,
  survivor: Patient,
  plan: CarePlan,
  team: CareTeam,
  put: <T extends Resource>(r: T) => Promise<T>,
): Promise<{ plan: CarePlan; team: CareTeam }> {
  const from = `Patient/${retiredId}`;
  const to = `Patient/${survivor.id}`;
  const retiredPlanId = planIdFor(retiredId);
  const retiredTeamId = teamIdFor(retiredId);
  for (const [type, id] of await w.referencesTo('Patient', retiredId)) {
    if (type === 'Provenance' || type === 'Patient') continue;
    if (id === retiredPlanId || id === retiredTeamId) continue;
    const r = await w.readOptional(type, id);
    if (r) await put(repoint(r, from, to) as Resource);
  }
  const oldPlan = await w.readOptional<CarePlan>('CarePlan', retiredPlanId);
  if (oldPlan) {
    const moved = repoint(oldPlan, from, to) as CarePlan;
    for (const a of moved.activity ?? []) if (!plan.activity?.some((x) => x.reference?.reference === a.reference?.reference)) plan = { ...plan, activity: [...(plan.activity ?? []), a] };
    for (const k of ['addresses', 'goal', 'supportingInfo', 'contributor'] as const) {
      for (const ref of moved[k] ?? []) plan = { ...plan, [k]: addRef(plan[k] as Reference[] | undefined, ref) };
    }
    plan = { ...plan, replaces: addRef(plan.replaces, { reference: `CarePlan/${retiredPlanId}` }) };
    if (oldPlan.status !== 'revoked') await put({ ...oldPlan, status: 'revoked', note: [...(oldPlan.note ?? []), { text: `Merged into CarePlan/${plan.id} (patient merge)` }] });
  }
  const oldTeam = await w.readOptional<CareTeam>('CareTeam', retiredTeamId);
  if (oldTeam) {
    const moved = repoint(oldTeam, from, to) as CareTeam;
    const changes: TeamChange[] = (moved.participant ?? [])
      .filter((p) => p.member?.reference !== to && p.member && p.role?.[0])
      .map((p) => ({ member: p.member!, role: p.role![0], onBehalfOf: p.onBehalfOf, start: p.period?.start, end: p.period?.end }));
    team = applyTeamChanges(team, changes, new Date().toISOString());
    if (oldTeam.status !== 'inactive') await put({ ...oldTeam, status: 'inactive' });
  }
  return { plan, team };
}

/** A deep copy with every `reference` equal to `from` replaced by `to`. */
function repoint(v: unknown, from: string, to: string): unknown {
  if (Array.isArray(v)) return v.map((x) => repoint(x, from, to));
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === 'reference' && x === from ? to : repoint(x, from, to);
    return out;
  }
  return v;
}

/** A stable short hash, for ids of things that have no identifier of their own. */
export function contentKey(v: unknown): string {
  return crypto.createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);
}
