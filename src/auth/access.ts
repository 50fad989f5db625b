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
 */
import type { CareTeam, Coding, Consent, ConsentProvision, Patient, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../store/db.js';
import { indexRows } from '../store/indexer.js';
import { municipalities, municipalityOfResidence } from '../careplan/directory.js';
import { CONFIDENTIALITY_SYSTEM, deterministicId, SYSTEMS } from '../fhir/identifiers.js';
import type { OrgKind, Principal } from './jwt.js';

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
  'ClinicalImpression', 'FamilyMemberHistory', 'Specimen', 'ImagingStudy', 'RiskAssessment', 'EpisodeOfCare',
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
export type Refusal = 'no-relationship' | 'consent' | 'restricted';

const REDACTED_KEEP: Record<string, string[]> = {
  // a social service for a health provider: what, by whom, when, in what state; never notes, amounts or reasons
  ServiceRequest: ['resourceType', 'id', 'meta', 'identifier', 'status', 'intent', 'category', 'code', 'subject', 'occurrencePeriod', 'occurrenceTiming', 'occurrenceDateTime', 'authoredOn', 'requester', 'performer'],
};

export class Access {
  private orgs: Promise<Set<string>> | undefined;
  private readonly visible = new Map<string, boolean>();
  private readonly consents = new Map<string, Consent[]>();
  /** cross-sector disclosures made in this request, for the audit trail */
  readonly disclosures = new Map<string, Disclosure>();

  constructor(
    private readonly db: Queryable,
    readonly principal: Principal,
  ) {}

  /** The Organization resources that are the caller: every one carrying its registry code, and its municipality. */
  orgRefs(): Promise<Set<string>> {
    this.orgs ??= (async () => {
      const code = this.principal.organization;
      const rows = await this.db.query<{ resource_id: string }>(
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

  private async decide(patientIds: string[]): Promise<void> {
    const undecided = [...new Set(patientIds)].filter((p) => !this.visible.has(p));
    if (undecided.length === 0) return;
    if (this.principal.kind === 'coordinator') {
      for (const p of undecided) this.visible.set(p, true);
      return;
    }
    const orgs = await this.orgRefs();
    for (const p of undecided) this.visible.set(p, false);
    const rows = await this.db.query<{ content: string }>(
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
        const member = (r.participant ?? []).some((x) => (x.member?.reference && orgs.has(x.member.reference)) || (x.onBehalfOf?.reference && orgs.has(x.onBehalfOf.reference)));
        if (member) this.visible.set(pid, true);
      }
    }
  }

  /** May the caller see this person? */
  async seesPatient(patientId: string): Promise<boolean> {
    await this.decide([patientId]);
    return this.visible.get(patientId) === true;
  }

  /** The resources of a page the caller may see (includes too), redacted where needed; the rest are left out. */
  async filter<T extends Resource>(resources: T[]): Promise<T[]> {
    const out: T[] = [];
    for (const d of await this.decideAll(resources)) if (d.resource) out.push(d.resource);
    return out;
  }

  /** One resource: the copy the caller may see, or why not. */
  async disclose<T extends Resource>(r: T): Promise<{ resource?: T; refusal?: Refusal }> {
    return (await this.decideAll([r]))[0];
  }

  private async decideAll<T extends Resource>(resources: T[]): Promise<{ resource?: T; refusal?: Refusal }[]> {
    const keys = resources.map((r) => Access.patientOf(r));
    const people = [...new Set(keys.filter((k): k is string => !!k))];
    await this.decide(people);
    await this.loadConsents(people.filter((p) => this.visible.get(p)));
    if ([...this.consents.values()].some((c) => c.length > 0)) this.orgSet = await this.orgRefs();
    return resources.map((r, i) => {
      const p = keys[i];
      if (p !== null && this.visible.get(p) !== true) return { refusal: 'no-relationship' as const };
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

  private async loadConsents(people: string[]): Promise<void> {
    const unloaded = people.filter((p) => !this.consents.has(p));
    if (unloaded.length === 0) return;
    for (const p of unloaded) this.consents.set(p, []);
    const rows = await this.db.query<{ content: string }>(
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
