/**
 * CareTeam participant roles: SNOMED CT where a concept exists, else the project's own care-team-role codes.
 * @see https://hl7.org/fhir/R4/valueset-participant-role.html (example binding: SNOMED CT)
 */
import type { CodeableConcept } from '@medplum/fhirtypes';

const SCT = 'http://snomed.info/sct';
export const LOCAL_ROLE_SYSTEM = 'https://care-gateway.ee/fhir/CodeSystem/care-team-role';

export interface RoleCode {
  system: string;
  code: string;
  display: string;
}

export const ROLES = {
  patient: { system: SCT, code: '116154003', display: 'Patient' },
  generalPractitioner: { system: SCT, code: '446050000', display: 'Primary care physician' },
  hospitalDoctor: { system: SCT, code: '309343006', display: 'Physician' },
  caregiver: { system: SCT, code: '133932002', display: 'Caregiver' },
  legalGuardian: { system: SCT, code: '58626002', display: 'Legal guardian' },
  socialWorker: { system: SCT, code: '106328005', display: 'Social worker' },
  municipalityOfResidence: { system: LOCAL_ROLE_SYSTEM, code: 'municipality-of-residence', display: 'Municipality of residence' },
  caseManager: { system: LOCAL_ROLE_SYSTEM, code: 'case-manager', display: 'Case manager' },
  childProtection: { system: LOCAL_ROLE_SYSTEM, code: 'child-protection-specialist', display: 'Child protection specialist' },
  supportPerson: { system: LOCAL_ROLE_SYSTEM, code: 'support-person', display: 'Support person' },
  specialNeedsCoordinator: { system: LOCAL_ROLE_SYSTEM, code: 'special-needs-coordinator', display: "School's special educational needs coordinator" },
  municipalSocialServices: { system: LOCAL_ROLE_SYSTEM, code: 'municipal-social-services', display: 'Municipality providing social services' },
  school: { system: LOCAL_ROLE_SYSTEM, code: 'school', display: 'School' },
  countyCoordinator: { system: LOCAL_ROLE_SYSTEM, code: 'county-care-coordinator', display: 'County care coordinator' },
} satisfies Record<string, RoleCode>;

export function role(r: RoleCode): CodeableConcept {
  return { coding: [{ system: r.system, code: r.code, display: r.display }], text: r.display };
}
