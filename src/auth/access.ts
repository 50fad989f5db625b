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
 */
import type { CareTeam, Patient, Resource } from '@medplum/fhirtypes';
import type { Queryable } from '../store/db.js';
import { indexRows } from '../store/indexer.js';
import { municipalities, municipalityOfResidence } from '../careplan/directory.js';
import { deterministicId, SYSTEMS } from '../fhir/identifiers.js';
import type { Principal } from './jwt.js';

export class Access {
  private orgs: Promise<Set<string>> | undefined;
  private readonly visible = new Map<string, boolean>();

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
    const todo = [...new Set(patientIds)].filter((p) => !this.visible.has(p));
    if (todo.length === 0) return;
    if (this.principal.kind === 'coordinator') {
      for (const p of todo) this.visible.set(p, true);
      return;
    }
    const orgs = await this.orgRefs();
    for (const p of todo) this.visible.set(p, false);
    const rows = await this.db.query<{ content: string }>(
      `SELECT content FROM resource WHERE NOT deleted AND resource_type IN ('Patient', 'CareTeam') AND patient_key = ANY($1::text[])`,
      [todo],
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

  /** The resources of a page the caller may see (includes too); the rest are left out. */
  async filter<T extends Resource>(resources: T[]): Promise<T[]> {
    const keys = resources.map((r) => Access.patientOf(r));
    await this.decide(keys.filter((k): k is string => !!k));
    return resources.filter((_, i) => keys[i] === null || this.visible.get(keys[i]!) === true);
  }
}
