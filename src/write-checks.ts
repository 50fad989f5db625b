/**
 * The checks every write passes, from any source: FHIR validation (R4 schema, base StructureDefinitions, and the
 * project profiles a resource claims — the shared plan and team always claim theirs) and the status lifecycles
 * of plan and activities.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { RepositoryOptions } from './store/writer.js';
import { validateResource } from './fhir/validate.js';
import { validateProfiles } from './fhir/profiles.js';
import { OutcomeError, hasErrors } from './fhir/outcome.js';
import { checkStatusTransition } from './careplan/lifecycle.js';

/** Every issue at once: base R4 and, only when the base passes, the profiles the resource claims. */
export function checkResource(r: unknown, extraProfiles: string[] = []): ReturnType<typeof validateResource> {
  const issues = validateResource(r);
  if (hasErrors(issues)) return issues;
  return [...issues, ...validateProfiles(r as Resource, extraProfiles)];
}

export function assertValidWithProfiles(r: unknown): void {
  const issues = checkResource(r);
  if (hasErrors(issues)) throw OutcomeError.fromIssues('invalid', issues);
}

export const writeChecks: RepositoryOptions = { validate: assertValidWithProfiles, checkUpdate: checkStatusTransition };
