/**
 * A referral to a municipality reaches its worklist: a GP's REF^I12 naming the municipality's social department
 * in PRD (PRD-2 the department, PRD-7 the registry code with EE-ARIREG) and a FHIR referral naming it by registry
 * code both give a ServiceRequest performed by, and a Task owned by, the municipality's own Organization — found by
 * `Task?owner=` and by `owner:Organization.identifier=` — never a Practitioner named after the department.
 */
import type { Bundle, Practitioner, ServiceRequest, Task } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { gpReferral } from '../fixtures/hl7v2/messages.js';
import { deterministicId, isikukoodCheckDigit, SYSTEMS } from '../../src/fhir/identifiers.js';

const ik = (ten: string) => ten + isikukoodCheckDigit(ten);
const BR = 'https://fhir.ee/sid/org/est/br';

describe.each(backends())('referrals to a municipality on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const get = async <T>(p: string) => (await (await fetch(`${ctx.base}${p}`)).json()) as T;

  test('HL7 v2 REF^I12: performer and Task owner are the Organization of Elva vald; its worklist finds the Task', async () => {
    const who = ik('3730210301');
    const patient = deterministicId('Patient', SYSTEMS.isikukood, who);
    const ack = await (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: gpReferral(who, 'RF-1') })).text();
    expect(ack).toContain('MSA|AA');
    const sr = (await get<Bundle<ServiceRequest>>(`/ServiceRequest?subject=Patient/${patient}&identifier=GP-REF-77`)).entry![0].resource!;
    expect(sr.performer).toEqual([{ reference: 'Organization/ehak-0171', display: 'Elva Vallavalitsus sotsiaalosakond' }]);
    for (const q of ['owner=Organization/ehak-0171', `owner:Organization.identifier=${BR}|77000170`]) {
      const tasks = (await get<Bundle<Task>>(`/Task?${q}&patient=Patient/${patient}`)).entry?.map((e) => e.resource!) ?? [];
      expect([q, tasks.some((t) => t.focus?.reference === `ServiceRequest/${sr.id}`)]).toEqual([q, true]);
    }
    const named = await get<Bundle<Practitioner>>(`/Practitioner?name=Elva`);
    expect(named.entry ?? []).toHaveLength(0);
  });

  test('a FHIR referral naming the municipality by registry code lands on the same Organization', async () => {
    const who = ik('3730210302');
    const patient = { resourceType: 'Patient', identifier: [{ system: 'https://fhir.ee/sid/pid/est/ni', value: who }], name: [{ family: 'Kask' }] };
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:1b1f0000-0000-4000-8000-000000000001', resource: patient, request: { method: 'POST', url: 'Patient' } },
        {
          fullUrl: 'urn:uuid:1b1f0000-0000-4000-8000-000000000002',
          resource: { resourceType: 'ServiceRequest', status: 'active', intent: 'order', subject: { reference: 'urn:uuid:1b1f0000-0000-4000-8000-000000000001' }, code: { text: 'home care assessment' }, performer: [{ identifier: { system: BR, value: '77000170' } }] },
          request: { method: 'POST', url: 'ServiceRequest' },
        },
        {
          resource: { resourceType: 'Task', status: 'requested', intent: 'order', focus: { reference: 'urn:uuid:1b1f0000-0000-4000-8000-000000000002' }, for: { reference: 'urn:uuid:1b1f0000-0000-4000-8000-000000000001' }, owner: { identifier: { system: BR, value: '77000170' } } },
          request: { method: 'POST', url: 'Task' },
        },
      ],
    };
    const res = await fetch(ctx.base, { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify(bundle) });
    expect(res.status).toBe(200);
    const id = deterministicId('Patient', SYSTEMS.isikukood, who);
    const tasks = (await get<Bundle<Task>>(`/Task?owner=Organization/ehak-0171&patient=Patient/${id}`)).entry ?? [];
    expect(tasks).toHaveLength(1);
    const sr = (await get<Bundle<ServiceRequest>>(`/ServiceRequest?subject=Patient/${id}&performer=Organization/ehak-0171`)).entry ?? [];
    expect(sr).toHaveLength(1);
  });
});
