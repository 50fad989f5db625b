/**
 * Status lifecycles of the plan and its activities: a write may only move a resource along the FHIR state
 * machine (e.g. a completed CarePlan cannot become active again). Checked on every update, from any source.
 *
 * @see https://hl7.org/fhir/R4/valueset-request-status.html (CarePlan, ServiceRequest)
 * @see https://hl7.org/fhir/R4/task.html#statemachine (Task)
 */
import type { Resource } from '@medplum/fhirtypes';
import { OutcomeError } from '../fhir/outcome.js';

type Machine = Record<string, string[]>;

/** RequestStatus: draft → active → on-hold / completed / revoked; everything may become entered-in-error. */
const REQUEST: Machine = {
  draft: ['active', 'revoked', 'entered-in-error', 'unknown'],
  active: ['on-hold', 'completed', 'revoked', 'entered-in-error', 'unknown'],
  'on-hold': ['active', 'completed', 'revoked', 'entered-in-error', 'unknown'],
  completed: ['entered-in-error'],
  revoked: ['entered-in-error'],
  'entered-in-error': [],
  unknown: ['draft', 'active', 'on-hold', 'completed', 'revoked', 'entered-in-error'],
};

const TASK: Machine = {
  draft: ['requested', 'cancelled', 'entered-in-error'],
  requested: ['received', 'accepted', 'rejected', 'ready', 'in-progress', 'on-hold', 'cancelled', 'failed', 'completed', 'entered-in-error'],
  received: ['accepted', 'rejected', 'ready', 'in-progress', 'on-hold', 'cancelled', 'failed', 'completed', 'entered-in-error'],
  accepted: ['ready', 'in-progress', 'on-hold', 'cancelled', 'failed', 'completed', 'entered-in-error'],
  ready: ['in-progress', 'on-hold', 'cancelled', 'failed', 'completed', 'entered-in-error'],
  'in-progress': ['on-hold', 'cancelled', 'failed', 'completed', 'entered-in-error'],
  'on-hold': ['in-progress', 'ready', 'cancelled', 'failed', 'completed', 'entered-in-error'],
  rejected: ['entered-in-error'],
  cancelled: ['entered-in-error'],
  failed: ['entered-in-error'],
  completed: ['entered-in-error'],
  'entered-in-error': [],
};

const MACHINES: Record<string, Machine> = { CarePlan: REQUEST, ServiceRequest: REQUEST, Task: TASK };

/** Throws an OutcomeError (invalid, at `<Type>.status`) when `next` is not a permitted successor of `prev`. */
export function checkStatusTransition(prev: Resource, next: Resource): void {
  const machine = MACHINES[next.resourceType];
  if (!machine) return;
  const from = (prev as { status?: string }).status;
  const to = (next as { status?: string }).status;
  if (!from || !to || from === to) return;
  if (!(machine[from] ?? []).includes(to)) {
    throw new OutcomeError(
      'invalid',
      `${next.resourceType}/${next.id}: status cannot change from "${from}" to "${to}"` +
        ((machine[from] ?? []).length ? ` (allowed: ${machine[from].join(', ')})` : ' (it is final)'),
      `${next.resourceType}.status`,
    );
  }
}
