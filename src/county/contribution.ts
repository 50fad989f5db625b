/**
 * What every source contributes to a person's shared plan: the types the mappings (HL7 v2, FHIR, municipal exports)
 * produce and the plan assembly consumes. Types only, so the mappings need nothing of the assembly.
 */
import type { CodeableConcept, Organization, Patient, Reference as FhirReference, Resource } from '@medplum/fhirtypes';

/** A reference to any resource type (the plan and team point at many kinds). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reference = FhirReference<any>;

/** What happened, as the coordination rules (mappings/careplan/rules.yaml) name it. */
export const PLAN_EVENTS = ['discharge', 'discharge-cancelled', 'admission', 'admission-cancelled', 'referral', 'service-decision', 'demographics', 'merge', 'other'] as const;
export type PlanEvent = (typeof PLAN_EVENTS)[number];

export interface TeamChange {
  member: Reference;
  role: CodeableConcept;
  onBehalfOf?: Reference;
  start?: string;
  /** the participant left: their participation gets period.end (nobody is deleted) */
  end?: string;
}

export interface Contribution {
  channel: 'hl7v2' | 'fhir' | 'social-care';
  /** the inbox entry the contribution came from (Provenance.entity source) */
  inboxId: string;
  /** for people: e.g. `HL7 v2 ADT^A03 control id 123 from ELVA_HIS`; goes into Provenance.entity.what.display */
  description: string;
  /** the contributing organisation: hospital, GP practice or municipality */
  organization?: Organization;
  /** the person who made the contribution (EVN-5, the case worker, …) */
  author?: Reference;
  patient: Patient;
  /** the contributed resources, with ids (deterministic from source identifiers) */
  resources: Resource[];
  event: PlanEvent;
  /** the encounter a discharge or its cancellation is about */
  encounterId?: string;
  /** when the event happened (EVN-2 / EVN-6, Encounter.period.end, decision date) */
  occurredAt?: string;
  /** local segments the message carried and flags its source set (for the rules) */
  segments?: string[];
  flags?: string[];
  team?: TeamChange[];
  /** A40 merge: the patient id that is retired in favour of `patient` */
  merge?: { retiredPatientId: string };
  /**
   * The Patient is only what this source knows to identify the person (a municipal export): it is created when
   * the person is new, never overwrites a stored Patient, and carries no event time, so the next hospital or GP
   * message sets the demographics in full.
   */
  patientStub?: boolean;
}

