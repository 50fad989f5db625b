/**
 * Organisation-scoped access: who may see which people's data (one decision per request, cached).
 *
 * - hospital, GP practice: the people whose shared CareTeam it belongs to (as a member, or as the organisation a
 *   member acts on behalf of) or whose GP it is (Patient.generalPractitioner);
 * - municipality: its residents (the EHAK code of the current home address, mappings/directory) and the people
 *   whose team it belongs to;
 * - county care coordinator: everyone.
 * Resources outside any patient compartment (Practitioner, Organization, the conformance resources) are visible to
 * every authenticated caller; what is in a compartment follows the person.
 *
 * Within a person's data, three further rules (minimum necessary):
 * - **consent**: the person's active Consents (scope `patient-privacy`) permit or deny by actor (a kind of
 *   organisation — CodeSystem organisation-kind in `provision.actor.role` — or one Organization), data class
 *   (CodeSystem data-class `social-care` | `clinical`, or a resource type, in `provision.class`) and security label;
 *   nested provisions are exceptions to their parent; a deny in any Consent wins;
 * - **restricted labels**: data labelled `R` (v3-Confidentiality; child protection, special welfare) is seen only by
 *   callers whose token is cleared for it (claim `clearance`), `V` only with `V`;
 * - **redaction**: a health provider sees a social service's type, provider, period and status, never the case
 *   worker's notes or amounts (the copy it gets is labelled REDACTED).
 * Every cross-sector disclosure (social-care data to a health provider, clinical data to a municipality) is noted
 * with its legal basis for the audit trail.
 *
 * Longer than most files here on purpose: the policy is read whole by whoever reviews who may see what, so it is
 * one file, not spread over the layers that enforce it (store/guard.ts holds it).
 */
import type { AuditEvent, CareTeam, Coding, Consent, ConsentProvision, Organization, Patient, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../store/db.js';
import type { Guard, Operation } from '../store/guard.js';
import { indexRows } from '../store/indexer.js';
import { municipalities, municipalityOfResidence } from '../county/directory.js';
import { CONFIDENTIALITY_SYSTEM, canonicalSystem, deterministicId, SYSTEMS } from '../fhir/identifiers.js';
import { OutcomeError } from '../fhir/outcome.js';
import { allows, type OrgKind, type Principal } from './jwt.js';
import { searchParamsFor } from '../fhir/searchparams.js';

export const ORG_KIND_SYSTEM = 'https://care-gateway.ee/fhir/CodeSystem/organisation-kind';
export const DATA_CLASS_SYSTEM = 'https://care-gateway.ee/fhir/CodeSystem/data-class';
const RESOURCE_TYPES = 'http://hl7.org/fhir/resource-types';
const OBSERVATION_VALUE = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';
const SOCIAL_PROFILE = 'https://care-gateway.ee/fhir/StructureDefinition/social-service-request';
const SOCIAL_CATEGORY = '410606002';

export type DataClass = 'social-care' | 'clinical';
type Sector = 'health' | 'social' | 'county';
const SECTOR: Record<OrgKind, Sector> = { hospital: 'health', gp: 'health', municipality: 'social', coordinator: 'county' };

const CLINICAL = new Set([
  'Encounter', 'Condition', 'Observation', 'AllergyIntolerance', 'Procedure', 'DiagnosticReport', 'DocumentReference',
  'MedicationRequest', 'MedicationStatement', 'MedicationAdministration', 'MedicationDispense', 'Immunization',
  'ClinicalImpression', 'FamilyMemberHistory', 'Specimen', 'ImagingStudy', 'RiskAssessment', 'EpisodeOfCare', 'Coverage', 'Appointment',
]);

/** The sector a resource's data belongs to; undefined for coordination data (person, plan, team, goals, tasks). */
export function dataClass(r: Resource): DataClass | undefined {
  if (r.resourceType === 'ServiceRequest') {
    const social =
      (r.meta?.profile ?? []).includes(SOCIAL_PROFILE) ||
      (r.category ?? []).some((c) => (c.coding ?? []).some((x) => x.system === 'http://snomed.info/sct' && x.code === SOCIAL_CATEGORY));
    return social ? 'social-care' : 'clinical';
  }
  return CLINICAL.has(r.resourceType) ? 'clinical' : undefined;
}

/** The legal basis of a disclosure across sectors without a consent that permits it explicitly. */
export const STATUTORY_BASIS =
  'GDPR art. 9(2)(h): processing necessary for the provision of health or social care (county care coordination)';

export interface Disclosure {
  patient: string;
  dataClass: DataClass;
  /** a Consent that permits it, or the statutory basis */
  basis: string;
}

/** Why a resource is not disclosed to the caller. */
export type Refusal = 'no-relationship' | 'consent' | 'restricted' | 'not-own' | 'scope';

const REDACTED_KEEP: Record<string, string[]> = {
  // a social service for a health provider: what, by whom, when, in what state; never notes, amounts or reasons
  ServiceRequest: ['resourceType', 'id', 'meta', 'identifier', 'status', 'intent', 'category', 'code', 'subject', 'occurrencePeriod', 'occurrenceTiming', 'occurrenceDateTime', 'authoredOn', 'requester', 'performer'],
};

/** Resource types only the county coordinator writes: a person's privacy decisions. */
const COORDINATOR_WRITES = new Set(['Consent']);
/** Resource types only the county coordinator deletes: the person and the shared plan and team. */
const COORDINATOR_DELETES = new Set(['Patient', 'CarePlan', 'CareTeam', 'Consent']);
/**
 * What a hospital may add for a person it has no care relationship with yet (a patient arrives): its own clinical
 * record of the stay and its referrals. Never the access-granting or coordination resources.
 */
const HOSPITAL_ADMITS = new Set([...CLINICAL, 'ServiceRequest', 'Task', 'Goal', 'RelatedPerson', 'Provenance']);

/** Resource types no person's record holds: references to them say nothing about a person. */
const SHARED_TYPES = new Set(['Organization', 'Practitioner', 'PractitionerRole', 'Location', 'HealthcareService', 'Endpoint', 'Device', 'Medication', 'Substance']);
/** The parameters whose Patient target is the record a resource is in (the compartment's, as the indexer reads it). */
const COMPARTMENT_PARAMS = ['patient', 'subject', 'beneficiary', 'for'];

/** Every `reference` string in a resource, wherever it is nested. */
function eachReference(v: unknown, fn: (ref: string) => void): void {
  if (Array.isArray(v)) for (const x of v) eachReference(x, fn);
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'reference' && typeof x === 'string') fn(x);
      else eachReference(x, fn);
    }
  }
}

export class Access implements Guard {
  private orgs: Promise<Set<string>> | undefined;
  private readonly visible = new Map<string, boolean>();
  private readonly consents = new Map<string, Consent[]>();
  /** cross-sector disclosures made in this request, for the audit trail */
  readonly disclosures = new Map<string, Disclosure>();
  /** every person whose data this request read or wrote, for the audit trail */
  readonly touched = new Set<string>();
  /** other resources read or written (Type/id), for the audit trail */
  readonly objects = new Set<string>();

  constructor(
    private readonly db: Queryable,
    readonly principal: Principal,
  ) {}

  get seesAll(): boolean {
    return this.principal.kind === 'coordinator';
  }

  private get who(): string {
    return `${this.principal.kind} ${this.principal.organization}`;
  }

  allow(type: string, op: Operation): void {
    if (!allows(this.principal, type, op)) {
      throw new OutcomeError('forbidden', `the token's scopes do not allow ${{ c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' }[op]} on ${type}`);
    }
  }

  searching(params: [string, string][], resourceType?: string): void {
    if (this.seesAll) return;
    // a reverse chain selects by facts of other resources — possibly of people, or data, the caller may not see
    if (params.some(([k]) => k.startsWith('_has:'))) {
      throw new OutcomeError('forbidden', '_has (reverse chaining) is only for callers who may see every person: it would select by data you may not see', '_has');
    }
    if (!resourceType) return;
    for (const [k] of params) if (k.includes('.')) this.chainAllowed(resourceType, k);
  }

  /**
   * A chain selects by facts of the resources it reaches. For a caller who does not see everyone, each step must
   * reach either a resource no person's record holds (an Organization, a Practitioner, …) or, through a parameter
   * that defines the compartment (`patient`, `subject`, …), the Patient whose record the resource is in — facts of
   * the person the matched (and then filtered) resource belongs to. Never another person, never their other data.
   */
  private chainAllowed(resourceType: string, key: string): void {
    const steps = key.split('.');
    let type = resourceType;
    for (const step of steps.slice(0, -1)) {
      const [name, modifier] = step.split(':');
      const def = searchParamsFor(type)?.get(name);
      if (!def || def.type !== 'reference') return; // the search itself refuses it
      const targets = modifier ? [modifier] : def.targets;
      const shared = targets.every((t) => SHARED_TYPES.has(t));
      const ownPatient = type !== 'Patient' && COMPARTMENT_PARAMS.includes(name) && targets.every((t) => t === 'Patient');
      if (!shared && !ownPatient) {
        throw new OutcomeError('forbidden', `the chain ${key} would select by data of records you may not see: chain only to shared resources (Organization, Practitioner, …) or, through ${COMPARTMENT_PARAMS.join('/')}:Patient, to the record's own Patient`, key);
      }
      type = targets[0];
    }
  }

  /**
   * Conditional criteria (create, update, delete) are searched among every resource, hidden ones included — a
   * conditional write must never make a second resource because the first was hidden. So for a caller who does not
   * see everyone they may only name what the caller already knows: identifiers (and ids), never clinical facts.
   */
  conditional(params: [string, string][]): void {
    if (this.seesAll) return;
    const bad = params.map(([k]) => k).filter((k) => !['identifier', '_id'].includes(k));
    if (bad.length) throw new OutcomeError('forbidden', `conditional criteria name identifiers (identifier, _id) only; not ${bad.join(', ')}`, bad[0]);
  }

  async reveal<T extends Resource>(r: T, q?: Queryable): Promise<T> {
    const d = (await this.decideAll([r], q))[0];
    this.note(r); // refusals are audited under the person too (their own trail shows who tried)
    if (d.resource) return d.resource;
    const why = {
      'no-relationship': `${this.who} has no care relationship with this person`,
      consent: `the person's privacy consent closes this data to ${this.who}`,
      restricted: `this data is restricted (security label) and ${this.who}'s token is not cleared for it`,
      'not-own': `audit records are shown only to the organisation they name and to the county coordinator`,
      scope: `the token's scopes do not allow reading ${r.resourceType}`,
    }[d.refusal!];
    throw new OutcomeError('forbidden', why);
  }

  /** What a change or delete must be able to see: all of it, not a redacted copy. */
  private async revealWhole(r: Resource, q?: Queryable): Promise<void> {
    const shown = await this.reveal(r, q);
    if (shown !== r) throw new OutcomeError('forbidden', `${this.who} sees only part of ${r.resourceType}/${r.id} and may not change it`);
  }

  async write(old: Resource | undefined, next: Resource, q?: Queryable, wasDeleted = false): Promise<void> {
    const type = next.resourceType;
    if (wasDeleted && !this.seesAll) throw new OutcomeError('forbidden', `${type}/${next.id} was deleted; restoring it is for the county coordinator`);
    if (type === 'AuditEvent') throw new OutcomeError('not-allowed', 'AuditEvent is written by the server only and cannot be created, changed or deleted');
    if (type === 'Provenance' && old) throw new OutcomeError('not-allowed', 'Provenance cannot be changed or deleted');
    this.allow(type, old ? 'u' : 'c');
    this.note(next);
    if (old) await this.revealWhole(old, q);
    if (this.seesAll) return;
    if (COORDINATOR_WRITES.has(type)) throw new OutcomeError('forbidden', `${type} is recorded by the county coordinator only`);
    await this.asOneself(next, q);
    const patient = Access.patientOf(next);
    if (type === 'Patient') {
      await this.noSelfGrant(old, next, q);
      if (!old) this.visible.set(next.id!, true); // what this request goes on to write for the new person
      return;
    }
    if (patient) {
      const sees = await this.seesPatient(patient, q);
      if (!sees && !(this.principal.kind === 'hospital' && !old && HOSPITAL_ADMITS.has(type))) {
        throw new OutcomeError('forbidden', `${this.who} has no care relationship with Patient/${patient} and may not write ${type} for them`);
      }
    }
    await this.noSelfGrant(old, next, q);
  }

  async remove(old: Resource, q?: Queryable): Promise<void> {
    const type = old.resourceType;
    if (type === 'AuditEvent') throw new OutcomeError('not-allowed', 'AuditEvent is written by the server only and cannot be created, changed or deleted');
    if (type === 'Provenance') throw new OutcomeError('not-allowed', 'Provenance cannot be changed or deleted');
    this.allow(type, 'd');
    this.note(old);
    await this.revealWhole(old, q);
    if (!this.seesAll && COORDINATOR_DELETES.has(type)) throw new OutcomeError('forbidden', `${type} is deleted by the county coordinator only`);
    if (!this.seesAll && type === 'Organization' && !(await this.orgRefs(q)).has(`Organization/${old.id}`)) {
      throw new OutcomeError('forbidden', `${this.who} may delete only its own Organization`);
    }
  }

  /**
   * Trusted membership: what grants access to a person — being their GP, their municipality of residence, a member
   * of their team — is set by the gateway's own plan assembly and the county coordinator. A client may not name its
   * own organisation in any of those places (unless the stored version already did), nor make another Organization
   * resource carry its registry code (it would then be that organisation for every team that names it).
   */
  private async noSelfGrant(old: Resource | undefined, next: Resource, q?: Queryable): Promise<void> {
    const orgs = await this.orgRefs(q);
    const own = (refs: (string | undefined)[]) => new Set(refs.filter((x): x is string => !!x && orgs.has(x)));
    const added = (before: Set<string>, after: Set<string>) => [...after].filter((x) => !before.has(x));
    if (next.resourceType === 'Patient') {
      const gp = (p: Patient | undefined) => own((p?.generalPractitioner ?? []).map((g) => g.reference));
      if (added(gp(old as Patient | undefined), gp(next as Patient)).length) {
        throw new OutcomeError('forbidden', `${this.who} may not name itself the person's GP (generalPractitioner comes from the GP registration: the hospital's ADT feed or the county coordinator)`, 'Patient.generalPractitioner');
      }
      const home = (p: Patient | undefined) => {
        const m = p ? municipalityOfResidence(p) : undefined;
        return own(m ? [`Organization/ehak-${m.ehak}`] : []);
      };
      if (added(home(old as Patient | undefined), home(next as Patient)).length) {
        throw new OutcomeError('forbidden', `${this.who} may not move a person into its own municipality (residence comes from the population register: the hospital's ADT feed, the municipal import or the county coordinator)`, 'Patient.address');
      }
    } else if (next.resourceType === 'CareTeam') {
      const members = (t: CareTeam | undefined) => own((t?.participant ?? []).flatMap((x) => [x.member?.reference, x.onBehalfOf?.reference]));
      if (added(members(old as CareTeam | undefined), members(next as CareTeam)).length) {
        throw new OutcomeError('forbidden', `${this.who} may not add its own organisation to a care team (team membership comes from the gateway's plan assembly or the county coordinator)`, 'CareTeam.participant');
      }
    } else if (next.resourceType === 'Organization') {
      const code = this.principal.organization;
      const carries = (o: Organization | undefined) => (o?.identifier ?? []).some((i) => i.system && canonicalSystem(i.system) === SYSTEMS.organisation && i.value === code);
      const mine = orgs.has(`Organization/${next.id}`);
      if (old && !mine) throw new OutcomeError('forbidden', `${this.who} may change only its own Organization, not Organization/${next.id}`);
      if (!old && carries(next as Organization) && next.id !== deterministicId('Organization', SYSTEMS.organisation, code)) {
        throw new OutcomeError('forbidden', `an Organization carrying ${this.who}'s registry code gets the id derived from it (${deterministicId('Organization', SYSTEMS.organisation, code)})`, 'Organization.identifier');
      }
    }
  }

  /** Writes only as oneself: an organisation named as requester or provider must be the caller. */
  private async asOneself(r: Resource, q?: Queryable): Promise<void> {
    const orgs = await this.orgRefs(q);
    const named = [(r as { requester?: { reference?: string } }).requester?.reference, (r as { serviceProvider?: { reference?: string } }).serviceProvider?.reference];
    for (const ref of named) {
      if (ref?.startsWith('Organization/') && !orgs.has(ref)) throw new OutcomeError('forbidden', `a contribution on behalf of ${ref} is not allowed: write as your own organisation`);
    }
  }

  /** Records whose data a request touched (for its AuditEvent). */
  private note(r: Resource): void {
    const p = Access.patientOf(r);
    if (p && !p.startsWith('urn:')) this.touched.add(p);
    else if (!p && r.id) this.objects.add(`${r.resourceType}/${r.id}`);
  }

  /** The Organization resources that are the caller: every one carrying its registry code, and its municipality. */
  orgRefs(q: Queryable = this.db): Promise<Set<string>> {
    this.orgs ??= (async () => {
      const code = this.principal.organization;
      const rows = await q.query<{ resource_id: string }>(
        `SELECT resource_id FROM idx_token WHERE resource_type = 'Organization' AND param = 'identifier' AND system = $1 AND code = $2`,
        [SYSTEMS.organisation, code],
      );
      const ids = new Set(rows.map((r) => `Organization/${r.resource_id}`));
      ids.add(`Organization/${deterministicId('Organization', SYSTEMS.organisation, code)}`);
      for (const m of municipalities().values()) if (m.registryCode === code) ids.add(`Organization/ehak-${m.ehak}`);
      return ids;
    })();
    return this.orgs;
  }

  /** The patient a resource belongs to (its compartment), or null for shared resources. */
  static patientOf(r: Resource): string | null {
    return indexRows(r).patientKey;
  }

  private async decide(patientIds: string[], q: Queryable = this.db): Promise<void> {
    const undecided = [...new Set(patientIds)].filter((p) => !this.visible.has(p));
    if (undecided.length === 0) return;
    if (this.principal.kind === 'coordinator') {
      for (const p of undecided) this.visible.set(p, true);
      return;
    }
    const orgs = await this.orgRefs(q);
    for (const p of undecided) this.visible.set(p, false);
    const rows = await q.query<{ content: string }>(
      `SELECT content FROM resource WHERE NOT deleted AND resource_type IN ('Patient', 'CareTeam') AND patient_key = ANY($1::text[])`,
      [undecided],
    );
    for (const row of rows) {
      const r = JSON.parse(row.content) as Patient | CareTeam;
      if (r.resourceType === 'Patient') {
        if ((r.generalPractitioner ?? []).some((g) => g.reference && orgs.has(g.reference))) this.visible.set(r.id!, true);
        const m = this.principal.kind === 'municipality' ? municipalityOfResidence(r) : undefined;
        if (m && orgs.has(`Organization/ehak-${m.ehak}`)) this.visible.set(r.id!, true);
      } else {
        const pid = r.subject?.reference?.split('/')[1];
        if (!pid) continue;
        // a team that is no longer active, and a participation that has ended, grant nothing (a move, a new GP)
        if (r.status === 'inactive' || r.status === 'entered-in-error') continue;
        const now = new Date().toISOString();
        const member = (r.participant ?? []).some(
          (x) =>
            !(x.period?.end && new Date(x.period.end).toISOString() <= now) &&
            ((x.member?.reference && orgs.has(x.member.reference)) || (x.onBehalfOf?.reference && orgs.has(x.onBehalfOf.reference))),
        );
        if (member) this.visible.set(pid, true);
      }
    }
  }

  /** May the caller see this person? */
  async seesPatient(patientId: string, q?: Queryable): Promise<boolean> {
    await this.decide([patientId], q);
    return this.visible.get(patientId) === true;
  }

  /** The resources of a page the caller may see (includes too), redacted where needed; the rest are left out. */
  async filter<T extends Resource>(resources: T[], q?: Queryable): Promise<T[]> {
    const out: T[] = [];
    for (const d of await this.decideAll(resources, q)) {
      if (!d.resource) continue;
      this.note(d.resource);
      out.push(d.resource);
    }
    return out;
  }

  private async decideAll<T extends Resource>(resources: T[], q?: Queryable): Promise<{ resource?: T; refusal?: Refusal }[]> {
    const keys = resources.map((r) => (r.resourceType === 'AuditEvent' ? null : Access.patientOf(r)));
    const shared = await this.peopleReferenced(resources.filter((r, i) => keys[i] === null && r.resourceType !== 'AuditEvent'), q);
    const audited = this.seesAll ? [] : resources.filter((r): r is T & AuditEvent => r.resourceType === 'AuditEvent').flatMap((e) => (e.entity ?? []).map((x) => x.what?.reference ?? '').filter((x) => x.startsWith('Patient/')).map((x) => x.slice(8)));
    const people = [...new Set([...keys.filter((k): k is string => !!k), ...[...shared.values()].flatMap((s) => [...s]), ...audited])];
    await this.decide(people, q);
    await this.loadConsents(people.filter((p) => this.visible.get(p)), q);
    this.orgSet = await this.orgRefs(q);
    return resources.map((r, i) => {
      // a stored Bundle (a document, a collection) carries whole resources of anyone, not references to them: only
      // for callers who see everyone
      if (r.resourceType === 'Bundle' && !this.seesAll) return { refusal: 'no-relationship' as const };
      // what the token's scopes do not cover is not shown, included resources too
      if (!allows(this.principal, r.resourceType, 'r') && !allows(this.principal, r.resourceType, 's')) return { refusal: 'scope' as const };
      // an audit record is about who did what: shown to the organisation it names as the actor, and the coordinator —
      // and to the organisation without the people it may not see (a refused request names whom it tried to reach)
      if (r.resourceType === 'AuditEvent' && !this.seesAll) {
        if (!this.isOwnEvent(r as AuditEvent)) return { refusal: 'not-own' as const };
        return { resource: this.ownEvent(r as AuditEvent) as unknown as T };
      }
      const p = keys[i];
      if (p !== null && this.visible.get(p) !== true) return { refusal: 'no-relationship' as const };
      // a shared resource (a Provenance, a List) that points into people's records is theirs too
      if ([...(shared.get(r) ?? [])].some((x) => this.visible.get(x) !== true)) return { refusal: 'no-relationship' as const };
      if (!this.cleared(r)) return { refusal: 'restricted' as const };
      if (p === null) return { resource: r };
      const cls = dataClass(r);
      const decision = this.consentDecision(this.consents.get(p) ?? [], r, cls);
      if (decision === 'deny') return { refusal: 'consent' as const };
      const sector = SECTOR[this.principal.kind];
      if (cls && ((cls === 'social-care' && sector === 'health') || (cls === 'clinical' && sector === 'social'))) {
        const basis = decision ? `${decision} (GDPR art. 9(2)(a): explicit consent)` : STATUTORY_BASIS;
        this.disclosures.set(`${p}|${cls}|${basis}`, { patient: p, dataClass: cls, basis });
      }
      if (r.resourceType === 'CareTeam' && this.hiddenLabels().includes('R')) return { resource: withoutRestrictedRoles(r as CareTeam) as unknown as T };
      return { resource: cls === 'social-care' && sector === 'health' ? redact(r) : r };
    });
  }

  /** The confidentiality labels the caller is not cleared for (for search criteria: chains and _has). */
  hiddenLabels(): string[] {
    const c = this.principal.clearance ?? [];
    if (c.includes('V')) return [];
    return c.includes('R') ? ['V'] : ['R', 'V'];
  }

  /** Security labels: R needs clearance R or V, V needs V (hiddenLabels). */
  private cleared(r: Resource): boolean {
    const hidden = this.hiddenLabels();
    return !(r.meta?.security ?? []).some((s) => s.system === CONFIDENTIALITY_SYSTEM && hidden.includes(s.code ?? ''));
  }

  /**
   * The people whose records resources outside any compartment point into (Provenance targets, List entries, …): one
   * statement for a page. Only references to resources that are in a compartment count; Organizations and
   * Practitioners are no one's.
   */
  private async peopleReferenced(resources: Resource[], q: Queryable = this.db): Promise<Map<Resource, Set<string>>> {
    const out = new Map<Resource, Set<string>>();
    if (this.seesAll || resources.length === 0) return out;
    const refs = new Map<Resource, string[]>();
    const all = new Set<string>();
    for (const r of resources) {
      const found: string[] = [];
      eachReference(r, (ref) => {
        const m = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(ref);
        if (m && !SHARED_TYPES.has(m[1])) found.push(`${m[1]}/${m[2]}`);
      });
      if (found.length) {
        refs.set(r, found);
        for (const f of found) all.add(f);
      }
    }
    if (all.size === 0) return out;
    const keys = [...all].map((k) => k.split('/'));
    const rows = await q.query<{ resource_type: string; id: string; patient_key: string | null }>(
      `SELECT resource_type, id, patient_key FROM resource WHERE (resource_type, id) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
      [keys.map((k) => k[0]), keys.map((k) => k[1])],
    );
    const owner = new Map(rows.map((x) => [`${x.resource_type}/${x.id}`, x.resource_type === 'Patient' ? x.id : x.patient_key]));
    for (const [r, found] of refs) {
      const people = new Set(found.map((f) => owner.get(f)).filter((p): p is string => !!p));
      if (people.size) out.set(r, people);
    }
    return out;
  }

  /** An organisation's own AuditEvent without the people it does not see. */
  private ownEvent(e: AuditEvent): AuditEvent {
    const hidden = (ref: string | undefined) => !!ref?.startsWith('Patient/') && this.visible.get(ref.slice(8)) !== true;
    if (!(e.entity ?? []).some((x) => hidden(x.what?.reference))) return e;
    return { ...e, entity: (e.entity ?? []).filter((x) => !hidden(x.what?.reference)) };
  }

  private isOwnEvent(e: AuditEvent): boolean {
    return (e.agent ?? []).some(
      (a) =>
        a.requestor &&
        ((a.who?.identifier?.value === this.principal.organization && canonicalSystem(a.who.identifier.system ?? '') === SYSTEMS.organisation) ||
          (a.who?.reference !== undefined && this.orgSet?.has(a.who.reference) === true)),
    );
  }

  private async loadConsents(people: string[], q: Queryable = this.db): Promise<void> {
    const unloaded = people.filter((p) => !this.consents.has(p));
    if (unloaded.length === 0) return;
    for (const p of unloaded) this.consents.set(p, []);
    const rows = await q.query<{ content: string }>(
      `SELECT content FROM resource WHERE NOT deleted AND resource_type = 'Consent' AND patient_key = ANY($1::text[])`,
      [unloaded],
    );
    const now = new Date().toISOString();
    for (const row of rows) {
      const c = JSON.parse(row.content) as Consent;
      const privacy = (c.scope?.coding ?? []).some((x) => x.code === 'patient-privacy');
      if (c.status !== 'active' || !privacy || !c.provision || !inPeriod(c.provision.period, now)) continue;
      const pid = c.patient?.reference?.split('/')[1];
      if (pid && this.consents.has(pid)) this.consents.get(pid)!.push(c);
    }
  }

  /** 'deny', `Consent/{id}` when a consent permits explicitly, undefined when no consent speaks to it. */
  private consentDecision(consents: Consent[], r: Resource, cls: DataClass | undefined): 'deny' | string | undefined {
    let permit: string | undefined;
    for (const c of consents) {
      const d = this.evaluate(c.provision!, r, cls, undefined);
      if (d === 'deny') return 'deny';
      if (d === 'permit') permit ??= `Consent/${c.id}`;
    }
    return permit;
  }

  /** A provision and its exceptions: the most specific provision that matches decides. */
  private evaluate(p: ConsentProvision, r: Resource, cls: DataClass | undefined, inherited: 'permit' | 'deny' | undefined): 'permit' | 'deny' | undefined {
    if (!this.matches(p, r, cls)) return undefined;
    let result = p.type ?? inherited;
    for (const sub of p.provision ?? []) {
      const d = this.evaluate(sub, r, cls, result);
      if (d === 'deny') return 'deny';
      if (d) result = d;
    }
    return result;
  }

  private matches(p: ConsentProvision, r: Resource, cls: DataClass | undefined): boolean {
    if (!inPeriod(p.period, new Date().toISOString())) return false;
    if (p.actor?.length && !p.actor.some((a) => this.isActor(a.role?.coding ?? [], a.reference?.reference))) return false;
    if (p.class?.length) {
      const hit = p.class.some((c) => (c.system === DATA_CLASS_SYSTEM && c.code === cls) || (c.system === RESOURCE_TYPES && c.code === r.resourceType));
      if (!hit) return false;
    }
    if (p.securityLabel?.length) {
      const labels = r.meta?.security ?? [];
      if (!p.securityLabel.some((l) => labels.some((x) => x.system === l.system && x.code === l.code))) return false;
    }
    return true;
  }

  /** An actor entry addresses the caller by kind (organisation-kind role) and/or by Organization reference. */
  private isActor(role: Coding[], reference: string | undefined): boolean {
    const kinds = role.filter((c) => c.system === ORG_KIND_SYSTEM).map((c) => c.code);
    const k = this.principal.kind;
    if (kinds.length && !kinds.some((x) => x === k || (x === 'health-provider' && (k === 'hospital' || k === 'gp')))) return false;
    if (reference?.startsWith('Organization/')) {
      // orgRefs() is resolved (decideAll) before any consent is evaluated
      return this.orgSet?.has(reference) === true;
    }
    return kinds.length > 0;
  }

  private orgSet: Set<string> | undefined;
}

function inPeriod(p: { start?: string; end?: string } | undefined, now: string): boolean {
  if (!p) return true;
  if (p.start && new Date(p.start).toISOString() > now) return false;
  if (p.end && new Date(p.end).toISOString() < now) return false;
  return true;
}

/**
 * Roles in a team that only restricted decisions bring (a child's protection case): the participant itself says
 * what the R label of the decision hides, so callers not cleared for R see the team without it.
 */
const RESTRICTED_ROLES = new Set(['child-protection-specialist']);

function withoutRestrictedRoles(t: CareTeam): CareTeam {
  const restricted = (p: NonNullable<CareTeam['participant']>[number]) => (p.role ?? []).some((r) => (r.coding ?? []).some((c) => RESTRICTED_ROLES.has(c.code ?? '')));
  if (!(t.participant ?? []).some(restricted)) return t;
  return { ...t, participant: (t.participant ?? []).filter((p) => !restricted(p)) };
}

/** The minimum-necessary copy of a social-care resource for a health provider. */
function redact<T extends Resource>(r: T): T {
  const keep = REDACTED_KEEP[r.resourceType];
  if (!keep) return r;
  const out: Record<string, unknown> = {};
  const src = r as unknown as Record<string, unknown>;
  for (const k of keep) if (src[k] !== undefined) out[k] = src[k];
  const meta = { ...(r.meta ?? {}) };
  meta.security = [...(meta.security ?? []), { system: OBSERVATION_VALUE, code: 'REDACTED', display: 'redacted' }];
  out.meta = meta;
  return out as unknown as T;
}
