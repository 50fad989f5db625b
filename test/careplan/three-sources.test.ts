/**
 * The care-plan issue's scenario, over the real HTTP API on every backend: for one person the hospital sends an
 * ADT^A03 discharge (GP in PD1, daughter as caregiver in NK1), the GP sends a REF^I12 referral, and the
 * municipality posts a home-care decision in its export. `GET /fhir/CarePlan?patient=…` then returns exactly one
 * active plan whose activities, CareTeam participants and Provenance show all three sources — whichever arrives first.
 */
import type { Bundle, CarePlan, CareTeam, Patient, Provenance, ServiceRequest } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { eeDischarge, gpReferral } from '../fixtures/hl7v2/messages.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';

function elvaExport(isikukood: string, decision: string): string {
  return JSON.stringify({
    otsused: [
      {
        number: decision,
        kuupaev: '2026-11-14',
        klient: { isikukood, nimi: { eesnimi: 'Jüri', perenimi: 'Tamm' } },
        teenus: { kood: 'KOD', seis: 'kehtiv', algus: '2026-11-16', maht: { kogus: 3, uhik: 'tund', periood: 'nädal' }, osutaja: 'Elva Koduhooldus' },
        menetleja: { isikukood_hash: 'cw-17', nimi: 'Piret Saar', roll: 'sotsiaaltöötaja', telefon: '+372 730 9876' },
      },
    ],
  });
}

describe.each(backends())('three sources, one plan, on %s', (_name, makeBackend) => {
  const suite = useGateway(makeBackend);
  let base: string;
  let url: string;
  beforeAll(() => ({ base, url } = suite));

  const hl7 = async (msg: string) => {
    const res = await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'x-application/hl7-v2+er7' }, body: msg });
    const ack = await res.text();
    expect(ack).toContain('MSA|AA');
  };
  const social = async (body: string) => {
    const res = await fetch(`${url}/social-care/elva`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    expect(res.status).toBe(200);
  };
  const get = async <T>(q: string): Promise<T> => (await (await fetch(`${base}/${q}`)).json()) as T;
  const found = async <T>(q: string): Promise<T[]> => ((await get<Bundle>(q)).entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource as T);

  async function sharedPlan(isikukood: string) {
    const patient = (await found<Patient>(`Patient?identifier=${NI}|${isikukood}`))[0];
    const plans = await found<CarePlan>(`CarePlan?patient=Patient/${patient.id}`);
    expect(plans).toHaveLength(1);
    const plan = plans[0];
    expect(plan.status).toBe('active');
    const team = await get<CareTeam>(plan.careTeam![0].reference!);
    const activities = await Promise.all(plan.activity!.map((a) => get<ServiceRequest>(a.reference!.reference!)));
    // every contribution changed the plan (it added an activity), so each has a Provenance targeting a plan version
    const provenance = await found<Provenance>(`Provenance?target=CarePlan/${plan.id}&_count=200`);
    return { patient, plan, team, activities, provenance };
  }

  function expectAllThree(s: Awaited<ReturnType<typeof sharedPlan>>) {
    const codes = s.activities.map((a) => a.code?.coding?.[0]?.code);
    // hospital: the rules' GP follow-up and (a stroke) the social-care needs assessment; GP: the referral; municipality: home care
    expect(codes).toEqual(expect.arrayContaining(['gp-follow-up-after-discharge', 'social-care-needs-assessment', 'home-care']));
    expect(s.activities.some((a) => a.identifier?.some((i) => i.value === 'GP-REF-77'))).toBe(true);
    const roles = s.team.participant!.map((p) => p.role![0].coding![0].code);
    // patient, GP (PD1), hospital doctor (PV1-7), daughter (NK1), municipality of residence, social worker
    expect(roles).toEqual(expect.arrayContaining(['116154003', '446050000', '309343006', '133932002', 'municipality-of-residence', '106328005']));
    expect(s.team.participant!.find((p) => p.member!.display === 'Piret Saar')!.onBehalfOf!.reference).toBe('Organization/ehak-0171');
    // the GP from PD1 stays on the Patient whatever the municipality's export says about the person
    expect(s.patient.generalPractitioner?.map((g) => g.display)).toEqual(['Dr Piret Perearst', 'Elva Perearstikeskus']);
    const sources = s.provenance.map((p) => p.entity![0].what!.display ?? '');
    expect(sources.some((d) => d.includes('ADT^A03'))).toBe(true);
    expect(sources.some((d) => d.includes('REF^I12'))).toBe(true);
    expect(sources.some((d) => d.includes('social-care export elva'))).toBe(true);
    // every contributor organisation is on the plan
    expect(s.plan.contributor!.map((c) => c.reference)).toContain('Organization/ehak-0171');
  }

  test('hospital discharge, then GP referral, then the municipal home-care decision', async () => {
    await hl7(eeDischarge({ controlId: 'S3-A03' }));
    await hl7(gpReferral('37302102711', 'S3-REF'));
    await social(elvaExport('37302102711', 'E-S3-1'));
    expectAllThree(await sharedPlan('37302102711'));
  });

  test('the municipality first: its stub Patient gives way to the hospital’s demographics, still one plan', async () => {
    const ik = '35602281007';
    await social(elvaExport(ik, 'E-S3-2'));
    const early = await sharedPlan(ik);
    expect(early.patient.generalPractitioner).toBeUndefined();
    await hl7(gpReferral(ik, 'S3-REF-2'));
    await hl7(eeDischarge({ controlId: 'S3-A03-2', isikukood: ik, visit: 'V-S3-2' }));
    const s = await sharedPlan(ik);
    expect(s.plan.id).toBe(early.plan.id);
    expectAllThree(s);
  });

  test('replaying all three inputs changes nothing', async () => {
    const before = await sharedPlan('37302102711');
    await hl7(eeDischarge({ controlId: 'S3-A03' }));
    await hl7(gpReferral('37302102711', 'S3-REF'));
    await social(elvaExport('37302102711', 'E-S3-1'));
    const after = await sharedPlan('37302102711');
    expect(after.plan.meta!.versionId).toBe(before.plan.meta!.versionId);
    expect(after.team.meta!.versionId).toBe(before.team.meta!.versionId);
    expect(after.provenance).toHaveLength(before.provenance.length);
  });
});
