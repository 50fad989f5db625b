/**
 * The API as an ordinary FHIR client sees it: fhir-kit-client (the GP software's client) against a running
 * gateway, on every backend — the GP pull of the shared plan with its team and Provenance, the municipality's
 * CareTeam query paged to the end, read/vread/history and the CapabilityStatement.
 */
import { Client } from 'fhir-kit-client';
import type { Bundle, CapabilityStatement, CarePlan, CareTeam, Patient } from '@medplum/fhirtypes';
import type { Gateway } from '../../src/app.js';
import { patientIdFor } from '../../src/mapping/hl7v2/ids.js';
import { SYSTEMS } from '../../src/fhir/identifiers.js';
import { backends, type Backend } from '../helpers/backends.js';
import { startTestGateway } from '../helpers/gateway.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

describe.each(backends())('fhir-kit-client against the gateway on %s', (_name, makeBackend) => {
  let backend: Backend;
  let gw: Gateway;
  let client: Client;

  beforeAll(async () => {
    backend = makeBackend();
    await backend.prepare();
    const started = await startTestGateway(backend);
    gw = started.gw;
    client = new Client({ baseUrl: started.base });
    // three people discharged home from Elva hospital (municipality Elva vald, EHAK 0171)
    for (const [i, ik] of ['37302102711', '36805280109', '38001010015'].entries()) {
      const res = await fetch(`${started.url}/hl7v2`, { method: 'POST', body: eeDischarge({ controlId: `FKC-${i}`, isikukood: ik, visit: `FKC-V${i}` }) });
      expect(res.status).toBe(200);
    }
  });
  afterAll(async () => {
    await gw.close();
    await backend.cleanup();
  });

  test('the GP pull: the plan by isikukood, with its CareTeam and Provenance, in one call', async () => {
    const bundle = (await client.search({
      resourceType: 'CarePlan',
      searchParams: {
        'patient.identifier': `${SYSTEMS.isikukood}|37302102711`,
        _include: 'CarePlan:care-team',
        _revinclude: 'Provenance:target',
      },
    })) as unknown as Bundle;
    const types = bundle.entry!.map((e) => `${e.resource!.resourceType}:${e.search?.mode}`);
    expect(types.filter((t) => t === 'CarePlan:match')).toHaveLength(1);
    expect(types).toContain('CareTeam:include');
    expect(types).toContain('Provenance:include');
    const plan = bundle.entry!.find((e) => e.resource!.resourceType === 'CarePlan')!.resource as CarePlan;
    expect(plan.subject.reference).toBe(`Patient/${patientIdFor(SYSTEMS.isikukood, '37302102711')}`);
  });

  test('the municipality query: its CareTeams, active, paged to the end with nextPage', async () => {
    const seen: string[] = [];
    let page = (await client.search({
      resourceType: 'CareTeam',
      searchParams: { participant: 'Organization/ehak-0171', status: 'active', _count: '2' },
    })) as unknown as Bundle;
    for (;;) {
      seen.push(...(page.entry ?? []).map((e) => (e.resource as CareTeam).id!));
      const next = client.nextPage({ bundle: page as never });
      if (!next) break;
      page = (await next) as unknown as Bundle;
    }
    expect(seen).toHaveLength(3);
    expect(new Set(seen).size).toBe(3);
  });

  test('read, vread, history and the CapabilityStatement', async () => {
    const id = patientIdFor(SYSTEMS.isikukood, '36805280109');
    const p = (await client.read({ resourceType: "Patient", id })) as unknown as Patient;
    expect(p.name?.[0].family).toBe('Tamm');
    const v1 = (await client.vread({ resourceType: "Patient", id, version: "1" })) as unknown as Patient;
    expect(v1.meta?.versionId).toBe('1');
    const history = (await client.history({ resourceType: 'Patient', id })) as unknown as Bundle;
    expect(history.type).toBe('history');
    const cs = (await client.capabilityStatement()) as unknown as CapabilityStatement;
    const careTeam = cs.rest![0].resource!.find((r) => r.type === 'CareTeam')!;
    expect(careTeam.searchParam!.map((s) => s.name)).toEqual(expect.arrayContaining(['participant', 'status', 'patient']));
  });

  test('a read of a missing resource is a 404 with an OperationOutcome', async () => {
    await expect(client.read({ resourceType: 'Patient', id: 'missing' })).rejects.toMatchObject({ response: { status: 404 } });
  });
});
