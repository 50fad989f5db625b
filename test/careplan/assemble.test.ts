/**
 * Shared care plan assembly on every backend: one CarePlan and one CareTeam per person, rules as data,
 * cancellation, replay, a move between municipalities, a merge, and concurrent contributions.
 *
 * Specifications: https://hl7.org/fhir/R4/careplan.html, careteam.html, provenance.html; IHE DCP/DCTM; MCC eCare Plan.
 */
import crypto from 'node:crypto';
import { isikukoodCheckDigit } from '../../src/fhir/identifiers.js';
import type { CarePlan, CareTeam, Condition, Encounter, Organization, Patient, Practitioner, Provenance, RelatedPerson, Resource, ServiceRequest, Task } from '@medplum/fhirtypes';
import { assemble, assembleMany, planIdFor, teamIdFor } from '../../src/careplan/assemble.js';
import type { Contribution } from '../../src/county/contribution.js';
import { OutcomeError } from '../../src/fhir/outcome.js';
import { inUnitOfWork } from '../../src/store/unit-of-work.js';
import type { Store } from '../../src/store/index.js';
import { backends, useStore } from '../helpers/backends.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const EHAK_EXT = 'https://fhir.ee/base/StructureDefinition/ee-ehak';

const hospital: Organization = { resourceType: 'Organization', id: 'org-elva-haigla', name: 'Elva Haigla', identifier: [{ system: 'https://fhir.ee/sid/org/est/br', value: '90006399' }] };
const gp: Practitioner = { resourceType: 'Practitioner', id: 'gp-d12345', identifier: [{ system: 'https://fhir.ee/sid/pro/est/pho', value: 'D12345' }], name: [{ family: 'Perearst', given: ['Piret'] }] };
const doctor: Practitioner = { resourceType: 'Practitioner', id: 'dr-d99876', identifier: [{ system: 'https://fhir.ee/sid/pro/est/pho', value: 'D99876' }], name: [{ family: 'Arst', given: ['Andres'] }] };

/** A valid isikukood of its own for each test person id. */
function isikukoodFor(id: string): string {
  const ten = '373021' + String(parseInt(crypto.createHash('sha256').update(id).digest('hex').slice(0, 8), 16) % 10000).padStart(4, '0');
  return ten + isikukoodCheckDigit(ten);
}

function person(id: string, ehak = '0171', name = 'Elva vald'): Patient {
  return {
    resourceType: 'Patient',
    id,
    // one isikukood per person (identity.ts joins contributions that name the same one)
    identifier: [{ system: NI, value: isikukoodFor(id) }],
    name: [{ family: 'Tamm', given: ['Jüri'] }],
    gender: 'male',
    birthDate: '1973-02-10',
    generalPractitioner: [{ reference: `Practitioner/${gp.id}` }],
    address: [{ use: 'home', country: 'EE', city: 'Elva', extension: [{ url: EHAK_EXT, valueCoding: { system: 'https://fhir.ee/sid/ehak', code: ehak, display: name } }] }],
  };
}

function discharge(patientId: string, inboxId: string, encounterId = `enc-${patientId}`): Contribution {
  const encounter: Encounter = {
    resourceType: 'Encounter',
    id: encounterId,
    status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    subject: { reference: `Patient/${patientId}` },
    period: { start: '2026-11-01T10:00:00+02:00', end: '2026-11-10T12:00:00+02:00' },
    participant: [{ type: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'ATND' }] }], individual: { reference: `Practitioner/${doctor.id}` } }],
    hospitalization: { dischargeDisposition: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/discharge-disposition', code: 'home' }] } },
  };
  const stroke: Condition = {
    resourceType: 'Condition',
    id: `cond-${patientId}-i63`,
    subject: { reference: `Patient/${patientId}` },
    code: { coding: [{ system: 'http://hl7.org/fhir/sid/icd-10', code: 'I63.9' }] },
    encounter: { reference: `Encounter/${encounterId}` },
  };
  const daughter: RelatedPerson = {
    resourceType: 'RelatedPerson',
    id: `rp-${patientId}-daughter`,
    patient: { reference: `Patient/${patientId}` },
    relationship: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'DAU' }] }],
    name: [{ family: 'Tamm', given: ['Kati'] }],
  };
  return {
    channel: 'hl7v2',
    inboxId,
    description: 'HL7 v2 ADT^A03 test discharge',
    organization: hospital,
    patient: person(patientId),
    resources: [gp, doctor, encounter, stroke, daughter],
    event: 'discharge',
    encounterId,
    occurredAt: '2026-11-10T12:00:00+02:00',
  };
}

describe.each(backends())('shared care plan on %s', (_name, makeBackend) => {
  const suite = useStore(makeBackend);
  let store: Store;
  beforeAll(() => ({ store } = suite));

  const run = (c: Contribution) => store.repo.transaction((w) => assemble(w, c));
  const plansOf = async (patientId: string) =>
    (await store.repo.search<CarePlan>({ resourceType: 'CarePlan', params: [['patient', `Patient/${patientId}`]], count: 50 })).resources;

  test('a discharge home creates one plan with a GP follow-up and, for a stroke, a municipal needs assessment', async () => {
    await run(discharge('p-discharge', 'inbox-1'));
    const plans = await plansOf('p-discharge');
    expect(plans).toHaveLength(1);
    const plan = plans[0];
    expect(plan).toMatchObject({ status: 'active', intent: 'plan', category: [{ coding: [{ code: 'LA28865-6' }] }] });
    expect(plan.careTeam).toEqual([{ reference: `CareTeam/${teamIdFor('p-discharge')}` }]);
    expect(plan.addresses).toEqual([{ reference: 'Condition/cond-p-discharge-i63' }]);
    expect(plan.supportingInfo).toEqual([{ reference: 'Encounter/enc-p-discharge' }]);
    expect(plan.contributor).toEqual([{ reference: 'Organization/org-elva-haigla' }]);

    const activities = await Promise.all(
      (plan.activity ?? []).map((a) => store.repo.read<ServiceRequest>('ServiceRequest', a.reference!.reference!.split('/')[1])),
    );
    const byCode = Object.fromEntries(activities.map((sr) => [sr.code?.coding?.[0].code, sr]));
    expect(Object.keys(byCode).sort()).toEqual(['gp-follow-up-after-discharge', 'social-care-needs-assessment']);
    expect(byCode['gp-follow-up-after-discharge']).toMatchObject({ status: 'active', performer: [{ reference: 'Practitioner/gp-d12345' }], requester: { reference: 'Organization/org-elva-haigla' } });
    expect(byCode['social-care-needs-assessment'].performer).toEqual([{ reference: 'Organization/ehak-0171' }]);

    const tasks = await store.repo.search<Task>({ resourceType: 'Task', params: [['focus', `ServiceRequest/${byCode['social-care-needs-assessment'].id}`]] });
    expect(tasks.resources).toHaveLength(1);
    expect(tasks.resources[0]).toMatchObject({ status: 'requested', owner: { reference: 'Organization/ehak-0171' }, for: { reference: 'Patient/p-discharge' } });

    const team = await store.repo.read<CareTeam>('CareTeam', teamIdFor('p-discharge'));
    const roles = (team.participant ?? []).map((p) => [p.role?.[0].coding?.[0].code, p.member?.reference]);
    expect(roles).toEqual(
      expect.arrayContaining([
        ['116154003', 'Patient/p-discharge'],
        ['446050000', 'Practitioner/gp-d12345'],
        ['municipality-of-residence', 'Organization/ehak-0171'],
        ['133932002', 'RelatedPerson/rp-p-discharge-daughter'],
        ['309343006', 'Practitioner/dr-d99876'],
      ]),
    );
    expect(team.participant?.find((p) => p.member?.reference === 'Practitioner/dr-d99876')?.onBehalfOf).toEqual({ reference: 'Organization/org-elva-haigla' });

    const prov = await store.repo.search<Provenance>({ resourceType: 'Provenance', params: [['target', `CarePlan/${plan.id}`]] });
    expect(prov.resources).toHaveLength(1);
    expect(prov.resources[0].entity?.[0]).toMatchObject({ role: 'source', what: { identifier: { value: 'inbox-1' } } });
    expect(prov.resources[0].target.map((t) => t.reference)).toContain(`CarePlan/${plan.id}/_history/1`);
  });

  test('a cause of death (HL7 v2 PDA-1: category death diagnosis) is no care need, and not what the plan addresses', async () => {
    const c = discharge('p-died', 'inbox-died');
    const deathDiagnosis = { coding: [{ system: 'http://snomed.info/sct', code: '16100001', display: 'Death diagnosis' }] };
    c.resources = c.resources.map((r) => (r.resourceType === 'Condition' ? { ...r, category: [deathDiagnosis] } : r));
    await run(c);
    const [plan] = await plansOf('p-died');
    expect(plan.addresses).toBeUndefined();
    expect(plan.supportingInfo).toEqual(expect.arrayContaining([{ reference: 'Condition/cond-p-died-i63' }]));
    const codes = await Promise.all((plan.activity ?? []).map((a) => store.repo.read<ServiceRequest>('ServiceRequest', a.reference!.reference!.split('/')[1])));
    expect(codes.map((sr) => sr.code?.coding?.[0].code)).not.toContain('social-care-needs-assessment'); // the stroke it died of is no reason to assess needs
  });

  test('a discharge of a person who died asks for no follow-up: the Patient deceased, or a cause of death, with no disposition', async () => {
    // PV1-36 empty: no hospitalization.dischargeDisposition, which alone would mean home
    const noDisposition = (r: Resource): Resource => (r.resourceType === 'Encounter' ? ({ ...r, hospitalization: undefined } as Resource) : r);
    const activityCodes = async (patientId: string): Promise<(string | undefined)[]> => {
      const [plan] = await plansOf(patientId);
      const srs = await Promise.all((plan?.activity ?? []).map((a) => store.repo.read<ServiceRequest>('ServiceRequest', a.reference!.reference!.split('/')[1])));
      return srs.map((sr) => sr.code?.coding?.[0].code);
    };
    // PID-29/30: deceased
    const died = discharge('p-dead-home', 'inbox-dead-home');
    died.patient = { ...died.patient, deceasedDateTime: '2026-11-10T07:10:00+02:00' };
    died.resources = died.resources.map(noDisposition);
    await run(died);
    expect(await activityCodes('p-dead-home')).toEqual([]);
    // PDA-1 only: a cause of death says it too
    const cause = discharge('p-cause', 'inbox-cause');
    cause.resources = cause.resources.map((r) => (r.resourceType === 'Condition' ? { ...r, category: [{ coding: [{ system: 'http://snomed.info/sct', code: '16100001' }] }] } : noDisposition(r)));
    await run(cause);
    expect(await activityCodes('p-cause')).toEqual([]);
    // the same discharge alive, no disposition: home, so the GP follows up and the stroke asks for an assessment
    const alive = discharge('p-alive', 'inbox-alive');
    alive.resources = alive.resources.map(noDisposition);
    await run(alive);
    expect((await activityCodes('p-alive')).sort()).toEqual(['gp-follow-up-after-discharge', 'social-care-needs-assessment']);
  });

  test('replaying the same contribution writes nothing new', async () => {
    const before = await store.repo.read<CarePlan>('CarePlan', planIdFor('p-discharge'));
    const again = await run(discharge('p-discharge', 'inbox-1'));
    expect(again.written).toEqual([]);
    expect((await store.repo.read<CarePlan>('CarePlan', planIdFor('p-discharge'))).meta?.versionId).toBe(before.meta?.versionId);
  });

  test('a cancelled discharge revokes exactly what the discharge added, keeping history', async () => {
    await run(discharge('p-cancel', 'inbox-c1'));
    const withDischarge = await store.repo.read<CarePlan>('CarePlan', planIdFor('p-cancel'));
    expect(withDischarge.activity).toHaveLength(2);
    const cancel: Contribution = { ...discharge('p-cancel', 'inbox-c2'), event: 'discharge-cancelled', resources: [] };
    await run(cancel);
    const after = await store.repo.read<CarePlan>('CarePlan', planIdFor('p-cancel'));
    expect(after.activity).toBeUndefined();
    for (const a of withDischarge.activity!) {
      const sr = await store.repo.read<ServiceRequest>('ServiceRequest', a.reference!.reference!.split('/')[1]);
      expect(sr.status).toBe('revoked');
    }
    const tasks = await store.repo.search<Task>({ resourceType: 'Task', params: [['patient', 'Patient/p-cancel']] });
    expect(tasks.resources.map((t) => t.status)).toEqual(['cancelled']);
    const history = await store.repo.history({ resourceType: 'CarePlan', id: planIdFor('p-cancel') });
    expect(history.length).toBeGreaterThanOrEqual(2);
  });

  test('a discharge sent again after its cancellation adds fresh requests', async () => {
    await run({ ...discharge('p-cancel', 'inbox-c3') });
    const plan = await store.repo.read<CarePlan>('CarePlan', planIdFor('p-cancel'));
    expect(plan.activity).toHaveLength(2);
    for (const a of plan.activity!) {
      expect((await store.repo.read<ServiceRequest>('ServiceRequest', a.reference!.reference!.split('/')[1])).status).toBe('active');
    }
  });

  test('a move to another municipality brings it into the team and ends the old one', async () => {
    await run(discharge('p-move', 'inbox-m1'));
    const moved: Contribution = {
      channel: 'hl7v2',
      inboxId: 'inbox-m2',
      description: 'ADT^A08 new address',
      organization: hospital,
      patient: { ...person('p-move', '0793', 'Tartu linn') },
      resources: [],
      event: 'demographics',
      occurredAt: '2026-11-15T09:00:00+02:00',
    };
    await run(moved);
    const team = await store.repo.read<CareTeam>('CareTeam', teamIdFor('p-move'));
    const m = (team.participant ?? []).filter((p) => p.role?.[0].coding?.[0].code === 'municipality-of-residence');
    expect(m.map((p) => [p.member?.reference, p.period?.end ?? null])).toEqual([
      ['Organization/ehak-0171', '2026-11-15T09:00:00+02:00'],
      ['Organization/ehak-0793', null],
    ]);
  });

  test('a merge leaves one active plan on the surviving patient, holding both plans’ contents', async () => {
    await run(discharge('p-survivor', 'inbox-s1', 'enc-s'));
    await run(discharge('p-retired', 'inbox-r1', 'enc-r'));
    const merge: Contribution = {
      channel: 'hl7v2',
      inboxId: 'inbox-merge',
      description: 'ADT^A40 merge',
      organization: hospital,
      patient: person('p-survivor'),
      resources: [{ ...person('p-retired'), active: false, link: [{ other: { reference: 'Patient/p-survivor' }, type: 'replaced-by' }] } as Resource],
      event: 'merge',
      merge: { retiredPatientId: 'p-retired' },
    };
    await run(merge);
    const active = (await plansOf('p-survivor')).filter((p) => p.status === 'active');
    expect(active).toHaveLength(1);
    expect(active[0].activity).toHaveLength(4);
    expect(active[0].replaces).toEqual([{ reference: `CarePlan/${planIdFor('p-retired')}` }]);
    expect((await store.repo.read<CarePlan>('CarePlan', planIdFor('p-retired'))).status).toBe('revoked');
    const enc = await store.repo.read<Encounter>('Encounter', 'enc-r');
    expect(enc.subject?.reference).toBe('Patient/p-survivor');
  });

  test('50 concurrent contributions for one person make one plan with all 50 activities', async () => {
    const pid = 'p-concurrent';
    const contributions = Array.from({ length: 50 }, (_, i): Contribution => ({
      channel: 'fhir',
      inboxId: `inbox-cc-${i}`,
      description: `referral ${i}`,
      patient: person(pid),
      resources: [
        {
          resourceType: 'ServiceRequest',
          id: `sr-cc-${i}`,
          status: 'active',
          intent: 'order',
          subject: { reference: `Patient/${pid}` },
          code: { text: `referral ${i}` },
        } as ServiceRequest,
      ],
      event: 'referral',
    }));
    await Promise.all(contributions.map((c) => run(c)));
    const plans = await plansOf(pid);
    expect(plans).toHaveLength(1);
    expect(new Set(plans[0].activity?.map((a) => a.reference?.reference))).toEqual(new Set(contributions.map((_, i) => `ServiceRequest/sr-cc-${i}`)));
    const teams = await store.repo.search<CareTeam>({ resourceType: 'CareTeam', params: [['patient', `Patient/${pid}`]] });
    expect(teams.resources).toHaveLength(1);
  });

  test('assembleMany: a batch in one unit of work; a contribution whose content is refused is undone alone', async () => {
    const bad = discharge('p-batch-2', 'inbox-batch-2');
    // an Encounter without its required status: refused by validation when the contribution writes it
    bad.resources = bad.resources.map((r) => (r.resourceType === 'Encounter' ? ({ ...r, status: undefined } as unknown as Resource) : r));
    const batch = [discharge('p-batch-1', 'inbox-batch-1'), bad, discharge('p-batch-3', 'inbox-batch-3'), discharge('p-batch-1', 'inbox-batch-1b', 'enc-p-batch-1-b')];
    const results = await inUnitOfWork(store.repo, (w) => assembleMany(w, batch));
    expect(results.map((r) => (r instanceof OutcomeError ? r.category : 'ok'))).toEqual(['ok', 'invalid', 'ok', 'ok']);
    expect((results[1] as OutcomeError).message).toMatch(/status/);
    expect(await plansOf('p-batch-1')).toHaveLength(1);
    expect(await plansOf('p-batch-3')).toHaveLength(1);
    expect(await plansOf('p-batch-2')).toHaveLength(0);
    // nothing of the refused contribution was written: not its patient, not its encounter, not its Provenance
    await expect(store.repo.read('Patient', 'p-batch-2')).rejects.toMatchObject({ category: 'not-found' });
    await expect(store.repo.read('Encounter', 'enc-p-batch-2')).rejects.toMatchObject({ category: 'not-found' });
    // the same person twice in one batch: both visits in the one plan, each contribution with its own Provenance
    const plan = (await plansOf('p-batch-1'))[0];
    const encounters = (plan.supportingInfo ?? []).map((r) => r.reference);
    expect(encounters).toEqual(expect.arrayContaining(['Encounter/enc-p-batch-1', 'Encounter/enc-p-batch-1-b']));
    const provs = await store.repo.search<Provenance>({ resourceType: 'Provenance', params: [['target', `CarePlan/${plan.id}`]], count: 50 });
    const first = results[0] as Exclude<(typeof results)[number], OutcomeError>;
    const fourth = results[3] as Exclude<(typeof results)[number], OutcomeError>;
    expect(first.written).toContain(`CarePlan/${plan.id}/_history/1`);
    expect(fourth.written).toContain(`CarePlan/${plan.id}/_history/2`); // the second version made in the same batch
    // one Provenance per contribution, naming all it wrote (but itself): the first created everything (CREATE); the
    // fourth created its Encounter and changed the plan (UPDATE), and its targets say which is which by their versions
    const ofContribution = (inbox: string) => provs.resources.filter((p) => p.entity?.[0].what?.identifier?.value === inbox);
    expect(ofContribution('inbox-batch-1')).toHaveLength(1);
    expect(ofContribution('inbox-batch-1b')).toHaveLength(1);
    const [p1] = ofContribution('inbox-batch-1');
    const [p4] = ofContribution('inbox-batch-1b');
    expect(p1.activity?.coding?.[0].code).toBe('CREATE');
    expect(p1.target.map((t) => t.reference).sort()).toEqual(first.written.filter((r) => !r.startsWith('Provenance/')).sort());
    expect(p1.target.every((t) => t.reference!.endsWith('/_history/1'))).toBe(true);
    expect(p4.activity?.coding?.[0].code).toBe('UPDATE');
    expect(p4.target.map((t) => t.reference).sort()).toEqual(fourth.written.filter((r) => !r.startsWith('Provenance/')).sort());
    expect(p4.target.map((t) => t.reference)).toEqual(expect.arrayContaining(['Encounter/enc-p-batch-1-b/_history/1', `CarePlan/${plan.id}/_history/2`]));
  });
});
