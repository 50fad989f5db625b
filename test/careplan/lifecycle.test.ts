/**
 * Status lifecycles (https://hl7.org/fhir/R4/valueset-request-status.html, task.html#statemachine), enforced on
 * every write: a completed CarePlan cannot become active again.
 */
import type { CarePlan, Task } from '@medplum/fhirtypes';
import { checkStatusTransition } from '../../src/careplan/lifecycle.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { pgliteBackend } from '../helpers/backends.js';

const plan = (status: CarePlan['status']): CarePlan => ({ resourceType: 'CarePlan', id: 'cp1', status, intent: 'plan', subject: { reference: 'Patient/p1' } });
const task = (status: Task['status']): Task => ({ resourceType: 'Task', id: 't1', status, intent: 'order' });

test.each([
  ['CarePlan', plan('active'), plan('completed'), true],
  ['CarePlan', plan('active'), plan('on-hold'), true],
  ['CarePlan', plan('on-hold'), plan('active'), true],
  ['CarePlan', plan('completed'), plan('active'), false],
  ['CarePlan', plan('revoked'), plan('active'), false],
  ['CarePlan', plan('completed'), plan('entered-in-error'), true],
  ['Task', task('requested'), task('accepted'), true],
  ['Task', task('accepted'), task('completed'), true],
  ['Task', task('cancelled'), task('requested'), false],
  ['Task', task('completed'), task('in-progress'), false],
])('%s %#: %o → %o allowed: %s', (_t, prev, next, allowed) => {
  if (allowed) expect(() => checkStatusTransition(prev, next)).not.toThrow();
  else expect(() => checkStatusTransition(prev, next)).toThrow(OutcomeError);
});

test('the store refuses completed → active with an OperationOutcome at CarePlan.status, and keeps the completed plan', async () => {
  const backend = pgliteBackend();
  const store = await backend.open();
  try {
    await store.repo.update(plan('active'));
    await store.repo.update(plan('completed'));
    const err = await store.repo.update(plan('active')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutcomeError);
    expect((err as OutcomeError).outcome.issue[0].expression).toEqual(['CarePlan.status']);
    expect((await store.repo.read<CarePlan>('CarePlan', 'cp1')).status).toBe('completed');
  } finally {
    await store.close();
    await backend.cleanup();
  }
});
