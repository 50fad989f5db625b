/**
 * One person's story through every source, asserting the shared plan, team, worklists and identity at each step:
 * a hospital discharge (Elva) → a move written in XAD-4 (Kambja) → the discharge cancelled (A13) → a GP referral to
 * the municipality → the municipality's decision; and a child: a decision with a school, its HEVKO and a guardian, then a
 * hospital stay.
 */
import type { Bundle, CarePlan, CareTeam, Patient, ServiceRequest, Task } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { eeDischarge, gpReferral } from '../fixtures/hl7v2/messages.js';
import { deterministicId, isikukoodCheckDigit, SYSTEMS } from '../../src/fhir/identifiers.js';

const ik = (ten: string) => ten + isikukoodCheckDigit(ten);

describe.each(backends())('a story across sources on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const hl7 = async (m: string) => {
    const ack = await (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: m })).text();
    expect(ack).toContain('MSA|AA');
  };
  const get = async <T>(p: string) => (await (await fetch(`${ctx.base}${p}`)).json()) as T;
  const team = async (p: string) => (await get<Bundle<CareTeam>>(`/CareTeam?subject=Patient/${p}`)).entry![0].resource!;
  const current = (t: CareTeam, role: string) => (t.participant ?? []).filter((x) => x.role?.[0]?.coding?.[0]?.code === role && (!x.period?.end || Date.parse(x.period.end) > Date.now())).map((x) => x.member!.reference);
  const tasks = async (owner: string, p: string) => (await get<Bundle<Task>>(`/Task?owner=${owner}&patient=Patient/${p}&status=requested`)).entry?.map((e) => e.resource!) ?? [];
  /** Elva vald's JSON export of these decisions, posted as the municipality posts it */
  const elvaExport = (otsused: unknown[]) => fetch(`${ctx.url}/social-care/elva`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ otsused }) });
  const plans = async (p: string) => (await get<Bundle<CarePlan>>(`/CarePlan?subject=Patient/${p}`)).entry?.map((e) => e.resource!) ?? [];

  test('discharge → move → cancellation → referral → municipal decision: one person, one plan, the right worklists at each step', async () => {
    const who = ik('3730210501');
    const p = deterministicId('Patient', SYSTEMS.isikukood, who);
    // 1. discharge from Elva hospital, living in Elva vald: the plan, Elva in the team, Elva's assessment Task
    await hl7(eeDischarge({ isikukood: who, controlId: 'ST-1', visit: 'V-ST', ehak: '0171', eventTime: '20261110120000' }));
    expect(await plans(p)).toHaveLength(1);
    expect(current(await team(p), 'municipality-of-residence')).toEqual(['Organization/ehak-0171']);
    expect((await tasks('Organization/ehak-0171', p)).length).toBe(1);
    // 2. a move to Kambja vald, written in XAD-4: Kambja in, Elva out, the Task handed over
    await hl7(
      eeDischarge({ isikukood: who, controlId: 'ST-2', visit: 'V-ST', trigger: 'A08', eventTime: '20261111120000' })
        .split('\r')
        .map((s) => (s.startsWith('PID|') ? s.split('|').map((f, i) => (i === 11 ? 'Pargi 3^^Ülenurme^Kambja vald^61714^EE^H' : f)).join('|') : s))
        .join('\r'),
    );
    expect(current(await team(p), 'municipality-of-residence')).toEqual(['Organization/ehak-0283']);
    expect(await tasks('Organization/ehak-0171', p)).toEqual([]);
    expect((await tasks('Organization/ehak-0283', p)).length).toBe(1);
    // 3. the discharge cancelled: what it added is revoked and cancelled — the assessment leaves Kambja's worklist
    await hl7(eeDischarge({ isikukood: who, controlId: 'ST-3', visit: 'V-ST', trigger: 'A13', eventTime: '20261112120000' }));
    expect(await tasks('Organization/ehak-0283', p)).toEqual([]);
    const revoked = (await get<Bundle<ServiceRequest>>(`/ServiceRequest?subject=Patient/${p}&status=revoked`)).entry ?? [];
    expect(revoked.length).toBeGreaterThan(0);
    // 4. the GP refers the person to Elva's social department (the referral names Elva by registry code)
    await hl7(gpReferral(who, 'ST-4'));
    expect((await tasks('Organization/ehak-0171', p)).some((t) => t.focus?.reference?.startsWith('ServiceRequest/'))).toBe(true);
    // 5. Elva decides on home care for them: the decision joins the same plan, Elva's case worker the team
    const imported = await elvaExport([
      {
        number: 'E-ST-1',
        kuupaev: '2026-11-20',
        klient: { isikukood: who, nimi: { eesnimi: 'Jüri', perenimi: 'Tamm' }, aadress: 'Kesk 1, Elva' },
        teenus: { kood: 'KOD', seis: 'kehtiv', algus: '2026-11-23', lopp: '2031-11-22' },
        menetleja: { isikukood_hash: 'cw-st', nimi: 'Piret Saar', roll: 'juhtumikorraldaja' },
      },
    ]);
    expect(imported.status).toBe(200);
    const plan = (await plans(p)).find((x) => x.status === 'active')!;
    const services = (await get<Bundle<ServiceRequest>>(`/ServiceRequest?subject=Patient/${p}&identifier=https://care-gateway.ee/fhir/sid/social-decision/0171|E-ST-1`)).entry!;
    expect(plan.activity!.map((a) => a.reference?.reference)).toContain(`ServiceRequest/${services[0].resource!.id}`);
    expect(current(await team(p), 'case-manager').length).toBe(1);
    // 6. the person is still one Patient with one active plan, whichever source spoke
    const people = (await get<Bundle<Patient>>(`/Patient?identifier=https://fhir.ee/sid/pid/est/ni|${who}`)).entry!;
    expect(people.map((e) => e.resource!.id)).toEqual([p]);
    expect((await plans(p)).filter((x) => x.status === 'active')).toHaveLength(1);
  });

  test('a child: a decision with a school, its HEVKO and a guardian, then a hospital stay — one team holds them all', async () => {
    const child = ik('5120405501');
    const p = deterministicId('Patient', SYSTEMS.isikukood, child);
    const decided = await elvaExport([
      {
        number: 'E-ST-C',
        kuupaev: '2026-09-01',
        klient: { isikukood: child, nimi: { eesnimi: 'Mia', perenimi: 'Pärn' }, aadress: 'Pargi 3, Elva' },
        teenus: { kood: 'LJK', seis: 'kehtiv', algus: '2026-09-01', lopp: '2031-06-15' },
        hooldajad: [{ nimi: 'Tiina Pärn', seos: 'eestkostja' }],
        kool: { nimi: 'Elva Gümnaasium', hev_koordinaator: { nimi: 'Evelin Org' } },
      },
    ]);
    expect(decided.status).toBe(200);
    await hl7(eeDischarge({ isikukood: child, controlId: 'ST-C1', visit: 'V-ST-C', ehak: '0171', pid3: `${child}^^^EE^NI` }));
    const t = await team(p);
    for (const role of ['school', 'special-needs-coordinator', '58626002', 'municipality-of-residence']) expect([role, current(t, role).length]).toEqual([role, 1]);
    expect(await plans(p)).toHaveLength(1);
  });
});
