/**
 * One person, one Patient, whichever route comes first (careplan/identity.ts): FHIR create, update, conditional
 * update, transaction and batch, $process-message, HL7 v2 and municipal imports all reach the Patient of an
 * isikukood; a hospital record number seen with an isikukood finds the person later on its own; a record number
 * reused for someone else never joins two people; a store holding duplicates from before is merged by the admin
 * operation with A40's semantics.
 */
import type { Bundle, CarePlan, Patient } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';
import { deterministicId, isikukoodCheckDigit, SYSTEMS } from '../../src/fhir/identifiers.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const ik = (ten: string) => ten + isikukoodCheckDigit(ten);
const derived = (isikukood: string) => deterministicId('Patient', SYSTEMS.isikukood, isikukood);

describe.each(backends())('identity across routes on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);

  const fhir = (path: string, init: RequestInit = {}) => fetch(`${ctx.base}${path}`, { ...init, headers: { 'Content-Type': 'application/fhir+json', ...(init.headers ?? {}) } });
  const hl7 = async (message: string) => {
    const ack = await (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'x-application/hl7-v2+er7' }, body: message })).text();
    expect(ack).toContain('MSA|AA');
    return ack;
  };
  const patientsOf = async (isikukood: string) => ((await (await fhir(`/Patient?identifier=${NI}|${isikukood}`)).json()) as Bundle).entry?.map((e) => e.resource!.id!) ?? [];
  const plansOf = async (patientId: string) => ((await (await fhir(`/CarePlan?subject=Patient/${patientId}&status=active`)).json()) as Bundle<CarePlan>).entry?.length ?? 0;
  const patient = (isikukood: string, family = 'Kask'): Patient => ({ resourceType: 'Patient', identifier: [{ system: NI, value: isikukood }], name: [{ family }], birthDate: '1973-02-10', gender: 'male' });

  test('FHIR create first, then HL7 v2: one Patient with the derived id, one plan', async () => {
    const who = ik('3730210100');
    const created = await fhir('/Patient', { method: 'POST', body: JSON.stringify(patient(who)) });
    expect(created.status).toBe(201);
    expect(((await created.json()) as Patient).id).toBe(derived(who));
    await hl7(eeDischarge({ isikukood: who, controlId: 'ID-1', visit: 'V-ID-1', pid3: `${who}^^^EE^NI` }));
    expect(await patientsOf(who)).toEqual([derived(who)]);
    expect(await plansOf(derived(who))).toBe(1);
  });

  test('HL7 v2 first, then every FHIR route: the same Patient, never a second', async () => {
    const who = ik('3730210101');
    await hl7(eeDischarge({ isikukood: who, controlId: 'ID-2', visit: 'V-ID-2', pid3: `${who}^^^EE^NI` }));
    const id = derived(who);
    // plain create: applied to the stored Patient (200), its location named
    const again = await fhir('/Patient', { method: 'POST', body: JSON.stringify(patient(who, 'Tamm')) });
    expect(again.status).toBe(200);
    expect(again.headers.get('location')).toContain(`/Patient/${id}/`);
    // conditional update by the identifier, transaction POST, batch POST, $process-message
    expect((await fhir(`/Patient?identifier=${NI}|${who}`, { method: 'PUT', body: JSON.stringify(patient(who, 'Tamm')) })).status).toBe(200);
    for (const type of ['transaction', 'batch']) {
      const b = { resourceType: 'Bundle', type, entry: [{ fullUrl: 'urn:uuid:8f0c7a5e-1111-4c1e-9d3e-000000000001', resource: patient(who, 'Tamm'), request: { method: 'POST', url: 'Patient' } }] };
      const res = (await (await fhir('', { method: 'POST', body: JSON.stringify(b) })).json()) as Bundle;
      expect(res.entry![0].response!.location).toContain(`Patient/${id}/`);
    }
    const message = {
      resourceType: 'Bundle',
      type: 'message',
      entry: [
        { resource: { resourceType: 'MessageHeader', id: 'id-msg-1', eventCoding: { system: 'https://care-gateway.ee/fhir/CodeSystem/message-event', code: 'patient-update' }, source: { endpoint: 'urn:gp' } } },
        { resource: patient(who, 'Tamm') },
      ],
    };
    expect(await (await fhir('/$process-message', { method: 'POST', body: JSON.stringify(message) })).text()).toContain('"code":"ok"');
    expect(await patientsOf(who)).toEqual([id]);
    expect(await plansOf(id)).toBe(1);
    // a PUT that would give the isikukood to a second Patient is refused, naming the one that holds it
    const other = await fhir('/Patient/someone-else', { method: 'PUT', body: JSON.stringify({ ...patient(who), id: 'someone-else' }) });
    expect(other.status).toBe(409);
    expect(await other.text()).toContain(`Patient/${id}`);
    const fresh = ik('3730210102');
    const wrongId = await fhir('/Patient/chosen-by-client', { method: 'PUT', body: JSON.stringify({ ...patient(fresh), id: 'chosen-by-client' }) });
    expect(wrongId.status).toBe(409);
    expect(await wrongId.text()).toContain(`Patient/${derived(fresh)}`);
    expect(await patientsOf(who)).toEqual([id]);
  });

  test('a hospital record number seen with an isikukood finds the person when it comes alone; a reused one joins nobody', async () => {
    const who = ik('3730210103');
    await hl7(eeDischarge({ isikukood: who, controlId: 'ID-3', visit: 'V-ID-3', pid3: `${who}^^^EE^NI~MR-7701^^^ELVA_HAIGLA^MR` }));
    // a later message with only the record number
    await hl7(eeDischarge({ isikukood: who, controlId: 'ID-4', visit: 'V-ID-4', trigger: 'A08', pid3: `MR-7701^^^ELVA_HAIGLA^MR` }));
    expect(await patientsOf(who)).toEqual([derived(who)]);
    const stored = (await (await fhir(`/Patient/${derived(who)}`)).json()) as Patient;
    expect(stored.identifier!.map((i) => i.value).sort()).toEqual(['MR-7701', who].sort());
    const byMr = ((await (await fhir(`/Patient?identifier=MR-7701`)).json()) as Bundle).entry!.map((e) => e.resource!.id);
    expect(byMr).toEqual([derived(who)]);
    expect(await plansOf(derived(who))).toBe(1);
    // another person whom the sender gave the same record number: a second Patient, not a merge
    const someoneElse = ik('4800101104');
    await hl7(eeDischarge({ isikukood: someoneElse, controlId: 'ID-5', visit: 'V-ID-5', pid3: `${someoneElse}^^^EE^NI~MR-7701^^^ELVA_HAIGLA^MR` }));
    expect(await patientsOf(someoneElse)).toEqual([derived(someoneElse)]);
    expect(await patientsOf(who)).toEqual([derived(who)]);
  });

  test('a record number first, the isikukood later: the person stays one Patient and gains the isikukood', async () => {
    const who = ik('3730210105');
    await hl7(eeDischarge({ isikukood: who, controlId: 'ID-6', visit: 'V-ID-6', trigger: 'A01', pid3: `MR-8802^^^ELVA_HAIGLA^MR` }));
    const byMr = ((await (await fhir(`/Patient?identifier=MR-8802`)).json()) as Bundle).entry!.map((e) => e.resource!.id!);
    expect(byMr).toHaveLength(1);
    await hl7(eeDischarge({ isikukood: who, controlId: 'ID-7', visit: 'V-ID-7', pid3: `${who}^^^EE^NI~MR-8802^^^ELVA_HAIGLA^MR` }));
    expect(await patientsOf(who)).toEqual(byMr);
    expect(await plansOf(byMr[0])).toBe(1);
  });

  test('duplicates from before: listed (isikukood masked) and merged as an A40 would', async () => {
    const who = ik('3730210106');
    // a Patient an earlier version created with a random id, beside the one the hospital's messages make
    await ctx.gw.store.repo.update({ ...patient(who, 'Vana'), id: 'legacy-random-id' });
    await ctx.gw.store.repo.update({ ...patient(who, 'Kask'), id: derived(who) });
    await hl7(eeDischarge({ isikukood: who, controlId: 'ID-8', visit: 'V-ID-8', pid3: `${who}^^^EE^NI` }));
    const list = (await (await fetch(`${ctx.url}/admin/patients/$duplicates`)).json()) as { duplicates: { isikukood: string; patients: string[]; survivor: string }[] };
    const mine = list.duplicates.find((d) => d.patients.includes('legacy-random-id'))!;
    expect(mine.survivor).toBe(derived(who));
    expect(mine.isikukood).not.toContain(who.slice(1, 10));
    const merged = (await (await fetch(`${ctx.url}/admin/patients/$merge-duplicates`, { method: 'POST' })).json()) as { merged: { survivor: string; retired: string }[] };
    expect(merged.merged).toContainEqual({ survivor: derived(who), retired: 'legacy-random-id' });
    const retired = (await (await fhir('/Patient/legacy-random-id')).json()) as Patient;
    expect(retired.active).toBe(false);
    expect(retired.link?.[0]).toMatchObject({ type: 'replaced-by', other: { reference: `Patient/${derived(who)}` } });
    expect(await plansOf(derived(who))).toBe(1);
    const after = (await (await fetch(`${ctx.url}/admin/patients/$duplicates`)).json()) as { duplicates: { patients: string[] }[] };
    expect(after.duplicates.some((d) => d.patients.includes('legacy-random-id'))).toBe(true); // still holds the isikukood, inactive
  });
});
