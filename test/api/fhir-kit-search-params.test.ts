/**
 * Every search parameter type as the GP's client (fhir-kit-client) sees it, on every backend: string (default,
 * :exact, :contains), token (system|code, code, |code, system|, :not, :text), reference (plain, typed, :Type,
 * :identifier), date with every prefix and partial dates, quantity and number, :missing, chained and reverse
 * chained parameters, _include/_revinclude (:iterate), _sort, paging with nextPage, _summary, _elements, _total,
 * and strict/lenient handling of unknown parameters.
 *
 * The seed has near-misses for each case (Saartamm for family=tamm, a Group with the same id as a Patient, an
 * Observation in mg/dL, a year-only birth date, an open Encounter period, …), so every test asserts the exact set
 * of matching resources.
 *
 * @see https://hl7.org/fhir/R4/search.html
 */
import crypto from 'node:crypto';
import { Client } from 'fhir-kit-client';
import type {
  Bundle,
  BundleEntry,
  CapabilityStatement,
  CarePlan,
  CareTeam,
  Encounter,
  Group,
  Observation,
  OperationOutcome,
  Organization,
  Patient,
  Provenance,
  Resource,
  RiskAssessment,
} from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const BR = 'https://fhir.ee/sid/org/est/br';
const MRN = 'https://example.org/mrn';
const UCUM = 'http://unitsofmeasure.org';
const LOINC = 'http://loinc.org';

/** An isikukood GYYMMDDSSS + the two-stage mod-11 check digit (weights 1..9,1 then 3..9,1,2,3; 10 twice → 0). */
function isikukood(first10: string): string {
  const d = [...first10].map(Number);
  const mod = (w: number[]): number => d.reduce((s, x, i) => s + x * w[i], 0) % 11;
  let c = mod([1, 2, 3, 4, 5, 6, 7, 8, 9, 1]);
  if (c === 10) c = mod([3, 4, 5, 6, 7, 8, 9, 1, 2, 3]);
  if (c === 10) c = 0;
  return first10 + c;
}

const IK = {
  P1: isikukood('3730210271'), // male, 1973-02-10 (= 37302102711)
  P2: isikukood('4680528012'), // female, 1968-05-28
  P3: isikukood('4800101023'), // female, 1980-01-01
  P4: isikukood('3730225034'), // male, 1973-02-25
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.each(backends())('every search parameter type through fhir-kit-client on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  let client: Client;
  /** label (P1, CP1, …) → server id, and `Type/id` → label */
  const id: Record<string, string> = {};
  const label = new Map<string, string>();
  /** between the creation of P1–P4 and that of P5 */
  let mark = '';

  const patients: Record<string, Patient> = {
    P1: {
      resourceType: 'Patient',
      identifier: [{ system: NI, value: IK.P1 }],
      active: true,
      name: [{ family: 'Tamm', given: ['Jüri'] }],
      gender: 'male',
      birthDate: '1973-02-10',
      address: [{ city: 'Elva', country: 'EE', postalCode: '61507' }],
    },
    P2: {
      resourceType: 'Patient',
      identifier: [{ system: NI, value: IK.P2 }],
      active: true,
      name: [{ family: 'Tammik', given: ['Mari'] }],
      gender: 'female',
      birthDate: '1968-05-28',
      address: [{ city: 'Tartu', country: 'EE' }],
    },
    P3: {
      resourceType: 'Patient',
      identifier: [{ system: NI, value: IK.P3 }],
      active: true,
      name: [{ family: 'Õunapuu', given: ['Ülle'] }],
      gender: 'female',
      birthDate: '1980-01-01',
      address: [{ city: 'Võru', country: 'EE' }],
    },
    P4: {
      resourceType: 'Patient',
      identifier: [
        { system: NI, value: IK.P4 },
        { system: MRN, value: 'LOCAL-5' },
      ],
      active: false,
      name: [{ family: 'Saartamm', given: ['Peeter'] }],
      gender: 'male',
      birthDate: '1973-02-25',
      address: [{ city: 'Elva', country: 'EE' }],
    },
    // no isikukood, no gender, no address, no active flag; a year-only birth date
    P5: {
      resourceType: 'Patient',
      identifier: [{ value: 'LOCAL-5' }],
      name: [{ family: 'Kask', given: ['Tõnu'] }],
      birthDate: '1973',
    },
  };

  const search = async (resourceType: string, searchParams: Record<string, string | string[]>, headers?: Record<string, string>): Promise<Bundle> =>
    (await client.search({ resourceType, searchParams, options: headers ? { headers } : undefined })) as unknown as Bundle;
  const matches = (b: Bundle): BundleEntry[] => (b.entry ?? []).filter((e) => e.search?.mode === 'match');
  const labelOf = (r: Resource): string => label.get(`${r.resourceType}/${r.id}`) ?? `${r.resourceType}/${r.id}`;
  /** labels of the matches in server order */
  const ordered = (b: Bundle): string[] => matches(b).map((e) => labelOf(e.resource!));
  /** labels of the matches, sorted */
  const found = (b: Bundle): string[] => ordered(b).sort();
  const included = (b: Bundle): string[] =>
    (b.entry ?? [])
      .filter((e) => e.search?.mode === 'include')
      .map((e) => labelOf(e.resource!))
      .sort();
  const q = async (resourceType: string, searchParams: Record<string, string | string[]>): Promise<string[]> => found(await search(resourceType, searchParams));
  const outcome = (b: Bundle): OperationOutcome | undefined => b.entry?.find((e) => e.search?.mode === 'outcome')?.resource as OperationOutcome | undefined;
  /** The status and OperationOutcome of a search the server refuses (fails the test if it does not). */
  const refused = async (p: Promise<unknown>): Promise<{ status: number; outcome: OperationOutcome }> => {
    const err = (await p.then(
      () => {
        throw new Error('the search was expected to be refused');
      },
      (e: unknown) => e,
    )) as { response?: { status: number; data: unknown } };
    if (!err.response) throw err;
    const data = err.response.data;
    return { status: err.response.status, outcome: (typeof data === 'string' ? JSON.parse(data) : data) as OperationOutcome };
  };
  const STRICT = { Prefer: 'handling=strict' };
  /** a refused search: a client error (4xx) with an OperationOutcome naming the culprit */
  const expectRefused = async (p: Promise<unknown>, mentions: string): Promise<void> => {
    const r = await refused(p);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(r.outcome.resourceType).toBe('OperationOutcome');
    expect(r.outcome.issue?.[0]?.severity).toBe('error');
    expect(JSON.stringify(r.outcome)).toContain(mentions);
  };

  beforeAll(async () => {
    client = new Client({ baseUrl: ctx.base });
    const remember = (l: string, r: Resource): void => {
      id[l] = r.id!;
      label.set(`${r.resourceType}/${r.id}`, l);
    };
    const to = (type: string, l: string): { reference: string } => ({ reference: `${type}/${id[l]}` });

    // The two Organizations in one transaction. (Only resources about no person go in a transaction: a FHIR
    // transaction is a care-plan submission, and for every Patient it touches the gateway writes the shared
    // CarePlan and CareTeam and a Provenance, which would add resources of its own to the searched sets.)
    const orgs: [string, Organization][] = [
      ['ORG-ELVA', { resourceType: 'Organization', identifier: [{ system: BR, value: '75008427' }], name: 'Elva Vallavalitsus' }],
      ['ORG-TARTU', { resourceType: 'Organization', identifier: [{ system: BR, value: '75006546' }], name: 'Tartu Linnavalitsus' }],
    ];
    const tx = (await client.transaction({
      body: {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: orgs.map(([, r]) => ({ fullUrl: `urn:uuid:${crypto.randomUUID()}`, resource: r, request: { method: 'POST', url: 'Organization' } })),
      } as never,
    })) as unknown as Bundle;
    expect(tx.type).toBe('transaction-response');
    tx.entry!.forEach((e, i) => remember(orgs[i][0], { resourceType: 'Organization', id: e.response!.location!.split('/')[1] } as Resource));

    // P1–P4, a mark for _lastUpdated, then P5
    for (const l of ['P1', 'P2', 'P3', 'P4']) remember(l, (await client.create({ resourceType: 'Patient', body: patients[l] as never })) as unknown as Patient);
    await sleep(40);
    mark = new Date().toISOString();
    await sleep(40);
    remember('P5', (await client.create({ resourceType: 'Patient', body: patients.P5 as never })) as unknown as Patient);

    const glucose = { coding: [{ system: LOINC, code: '15074-8', display: 'Glucose [Moles/volume] in Blood' }] };
    const actCode = (code: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code });
    // in order: each only references resources created before it
    const seed: [string, () => Resource][] = [
      ...['P1', 'P2', 'P3'].map(
        (p, i): [string, () => Resource] => [
          `CT${i + 1}`,
          () =>
            ({
              resourceType: 'CareTeam',
              status: i === 2 ? 'inactive' : 'active',
              subject: to('Patient', p),
              participant: [{ member: to('Organization', i === 1 ? 'ORG-TARTU' : 'ORG-ELVA') }],
            }) as CareTeam,
        ],
      ),
      ['CP1', () => ({ resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: to('Patient', 'P1'), careTeam: [to('CareTeam', 'CT1')], period: { start: '2026-01-05' } }) as CarePlan],
      ['CP2', () => ({ resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: to('Patient', 'P2'), careTeam: [to('CareTeam', 'CT2')], period: { start: '2026-03-01' } }) as CarePlan],
      ['CP3', () => ({ resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: to('Patient', 'P3'), period: { start: '2026-02-10' } }) as CarePlan],
      ['PROV1', () => ({ resourceType: 'Provenance', target: [to('CarePlan', 'CP1')], recorded: '2026-01-05T10:00:00Z', agent: [{ who: to('Organization', 'ORG-ELVA') }] }) as Provenance],
      // Encounters: closed in January, closed in February (date-only period), open since 20 January, none
      ['E1', () => ({ resourceType: 'Encounter', status: 'finished', class: actCode('IMP'), subject: to('Patient', 'P1'), period: { start: '2026-01-05T08:00:00Z', end: '2026-01-10T12:00:00Z' } }) as Encounter],
      ['E2', () => ({ resourceType: 'Encounter', status: 'finished', class: actCode('AMB'), subject: to('Patient', 'P2'), period: { start: '2026-02-01', end: '2026-02-03' } }) as Encounter],
      ['E3', () => ({ resourceType: 'Encounter', status: 'in-progress', class: actCode('IMP'), subject: to('Patient', 'P3'), period: { start: '2026-01-20T10:00:00Z' } }) as Encounter],
      ['E4', () => ({ resourceType: 'Encounter', status: 'planned', class: actCode('AMB'), subject: to('Patient', 'P1') }) as Encounter],
      // Observations: 6.1 and 5.4 mmol/L (UCUM), 7.2 mg/dL (UCUM), 5.5 "mmol/L" as a unit without a system, no value
      ['O1', () => ({ resourceType: 'Observation', status: 'final', code: glucose, subject: to('Patient', 'P1'), effectiveDateTime: '2026-01-06T09:00:00Z', valueQuantity: { value: 6.1, unit: 'mmol/L', system: UCUM, code: 'mmol/L' } }) as Observation],
      ['O2', () => ({ resourceType: 'Observation', status: 'final', code: glucose, subject: to('Patient', 'P2'), effectiveDateTime: '2026-02-02T09:00:00Z', valueQuantity: { value: 5.4, unit: 'mmol/L', system: UCUM, code: 'mmol/L' } }) as Observation],
      ['O3', () => ({ resourceType: 'Observation', status: 'final', code: { coding: [{ system: LOINC, code: '2345-7', display: 'Glucose [Mass/volume] in Serum or Plasma' }] }, subject: to('Patient', 'P3'), valueQuantity: { value: 7.2, unit: 'mg/dL', system: UCUM, code: 'mg/dL' } }) as Observation],
      ['O4', () => ({ resourceType: 'Observation', status: 'preliminary', code: { coding: [{ code: '15074-8' }], text: 'glucose (local)' }, subject: to('Patient', 'P1'), valueQuantity: { value: 5.5, unit: 'mmol/L' } }) as Observation],
      ['O5', () => ({ resourceType: 'Observation', status: 'cancelled', code: glucose, subject: to('Patient', 'P4'), dataAbsentReason: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/data-absent-reason', code: 'not-performed' }] } }) as Observation],
      // RiskAssessment.prediction.probability is the number parameter: 0.35, 0.8, and a Range (not a number)
      ['R1', () => ({ resourceType: 'RiskAssessment', status: 'final', subject: to('Patient', 'P1'), prediction: [{ outcome: { text: 'readmission' }, probabilityDecimal: 0.35 }] }) as RiskAssessment],
      ['R2', () => ({ resourceType: 'RiskAssessment', status: 'final', subject: to('Patient', 'P2'), prediction: [{ outcome: { text: 'readmission' }, probabilityDecimal: 0.8 }] }) as RiskAssessment],
      ['R3', () => ({ resourceType: 'RiskAssessment', status: 'final', subject: to('Patient', 'P3'), prediction: [{ outcome: { text: 'readmission' }, probabilityRange: { low: { value: 10, unit: '%' }, high: { value: 20, unit: '%' } } }] }) as RiskAssessment],
    ];
    for (const [l, make] of seed) {
      const r = make();
      remember(l, (await client.create({ resourceType: r.resourceType, body: r as never })) as unknown as Resource);
    }
    // a Group with the very id of P1 (update-as-create), and a plan for it: a typed reference must tell them apart
    const group: Group = { resourceType: 'Group', id: id.P1, type: 'person', actual: true, name: 'same id as P1' };
    remember('G1', (await client.update({ resourceType: 'Group', id: id.P1, body: group as never })) as unknown as Resource);
    const cp4: CarePlan = { resourceType: 'CarePlan', status: 'active', intent: 'plan', subject: { reference: `Group/${id.P1}` }, period: { start: '2025-12-01' } };
    remember('CP4', (await client.create({ resourceType: 'CarePlan', body: cp4 as never })) as unknown as Resource);
    expect(Object.keys(id)).toHaveLength(2 + 5 + seed.length + 2);
  });

  describe('the CapabilityStatement', () => {
    test('lists every parameter used here with its type', async () => {
      const cs = (await client.capabilityStatement()) as unknown as CapabilityStatement;
      const params = (type: string): Record<string, string> =>
        Object.fromEntries(cs.rest![0].resource!.find((r) => r.type === type)!.searchParam!.map((s) => [s.name, s.type]));
      expect(params('Patient')).toMatchObject({ _id: 'token', _lastUpdated: 'date', family: 'string', name: 'string', 'address-city': 'string', identifier: 'token', gender: 'token', active: 'token', birthdate: 'date' });
      expect(params('CarePlan')).toMatchObject({ patient: 'reference', subject: 'reference', 'care-team': 'reference', date: 'date' });
      expect(params('Encounter')).toMatchObject({ date: 'date', status: 'token', patient: 'reference' });
      expect(params('Observation')).toMatchObject({ 'value-quantity': 'quantity', code: 'token', subject: 'reference' });
      expect(params('RiskAssessment')).toMatchObject({ probability: 'number' });
      expect(params('Organization')).toMatchObject({ identifier: 'token' });
      // composite and special parameters are not claimed (the engine does not implement them)
      expect(params('Observation')['code-value-quantity']).toBeUndefined();
      expect(params('Location')?.near).toBeUndefined();
    });
  });

  describe('string', () => {
    test('default: prefix match on any part of the name, case- and accent-insensitive', async () => {
      expect(await q('Patient', { family: 'tamm' })).toEqual(['P1', 'P2']); // not Saartamm
      expect(await q('Patient', { family: 'TAMM' })).toEqual(['P1', 'P2']);
      expect(await q('Patient', { family: 'Tammi' })).toEqual(['P2']);
      expect(await q('Patient', { family: 'ounapuu' })).toEqual(['P3']);
      expect(await q('Patient', { family: 'Õun' })).toEqual(['P3']);
      expect(await q('Patient', { name: 'juri' })).toEqual(['P1']); // given Jüri
      expect(await q('Patient', { name: 'tõnu' })).toEqual(['P5']);
      expect(await q('Patient', { name: 'ma' })).toEqual(['P2']); // Mari; no other name part starts with "ma"
      expect(await q('Patient', { 'address-city': 'elva' })).toEqual(['P1', 'P4']);
      expect(await q('Patient', { 'address-city': 'voru' })).toEqual(['P3']);
      expect(await q('Patient', { family: 'amm' })).toEqual([]);
    });

    test('several values are OR, repeated parameters are AND', async () => {
      expect(await q('Patient', { family: 'kask,ounapuu' })).toEqual(['P3', 'P5']);
      expect(await q('Patient', { family: 'tamm', 'address-city': 'elva' })).toEqual(['P1']);
      expect(await q('Patient', { name: ['tamm', 'mari'] })).toEqual(['P2']);
    });

    test(':exact matches the whole value', async () => {
      expect(await q('Patient', { 'family:exact': 'Tamm' })).toEqual(['P1']); // not Tammik
      expect(await q('Patient', { 'family:exact': 'Õunapuu' })).toEqual(['P3']);
      expect(await q('Patient', { 'address-city:exact': 'Elva' })).toEqual(['P1', 'P4']);
      expect(await q('Patient', { 'family:exact': 'Tam' })).toEqual([]);
    });

    test(':exact is case- and accent-sensitive', async () => {
      expect(await q('Patient', { 'family:exact': 'tamm' })).toEqual([]);
      expect(await q('Patient', { 'family:exact': 'Ounapuu' })).toEqual([]);
      expect(await q('Patient', { 'address-country:exact': 'EE' })).toEqual(['P1', 'P2', 'P3', 'P4']);
      expect(await q('Patient', { 'address-country:exact': 'ee' })).toEqual([]);
    });

    test(':exact on a value that normalising leaves as it is (stored once, without a separate written form)', async () => {
      expect(await q('Patient', { 'address-postalcode:exact': '61507' })).toEqual(['P1']);
      expect(await q('Patient', { 'address-postalcode:exact': '6150' })).toEqual([]);
      expect(await q('Patient', { 'address-postalcode': '615' })).toEqual(['P1']);
    });

    test('phonetic reads the rows of name (the same expression in R4)', async () => {
      expect(await q('Patient', { phonetic: 'tamm' })).toEqual(['P1', 'P2']);
      expect(await q('Patient', { phonetic: 'ulle' })).toEqual(['P3']);
      expect(await q('Patient', { 'phonetic:exact': 'Ülle' })).toEqual(['P3']);
      // lowest name part of each: juri, kask, mari, ounapuu, peeter
      expect(ordered(await search('Patient', { _sort: 'phonetic' }))).toEqual(['P1', 'P5', 'P2', 'P3', 'P4']);
    });

    test(':contains matches anywhere in the value', async () => {
      expect(await q('Patient', { 'family:contains': 'tamm' })).toEqual(['P1', 'P2', 'P4']);
      expect(await q('Patient', { 'family:contains': 'APU' })).toEqual(['P3']);
      expect(await q('Patient', { 'name:contains': 'll' })).toEqual(['P3']); // Ülle
      expect(await q('Patient', { 'address-city:contains': 'ar' })).toEqual(['P2']);
    });
  });

  describe('token', () => {
    test('system|code, code alone, |code (no system) and system| (any code)', async () => {
      expect(await q('Patient', { identifier: `${NI}|${IK.P1}` })).toEqual(['P1']);
      expect(await q('Patient', { identifier: IK.P2 })).toEqual(['P2']);
      expect(await q('Patient', { identifier: 'LOCAL-5' })).toEqual(['P4', 'P5']);
      expect(await q('Patient', { identifier: '|LOCAL-5' })).toEqual(['P5']);
      expect(await q('Patient', { identifier: `${MRN}|LOCAL-5` })).toEqual(['P4']);
      expect(await q('Patient', { identifier: `${NI}|` })).toEqual(['P1', 'P2', 'P3', 'P4']);
      expect(await q('Patient', { identifier: `${MRN}|${IK.P1}` })).toEqual([]);
      expect(await q('Organization', { identifier: `${BR}|75008427` })).toEqual(['ORG-ELVA']);
    });

    test('codes, CodeableConcepts and booleans', async () => {
      expect(await q('Patient', { gender: 'male' })).toEqual(['P1', 'P4']);
      expect(await q('Patient', { gender: 'female,male' })).toEqual(['P1', 'P2', 'P3', 'P4']);
      expect(await q('Patient', { active: 'true' })).toEqual(['P1', 'P2', 'P3']);
      expect(await q('Observation', { code: `${LOINC}|15074-8` })).toEqual(['O1', 'O2', 'O5']);
      expect(await q('Observation', { code: '15074-8' })).toEqual(['O1', 'O2', 'O4', 'O5']);
      expect(await q('Observation', { code: '|15074-8' })).toEqual(['O4']);
      expect(await q('Observation', { code: `${LOINC}|` })).toEqual(['O1', 'O2', 'O3', 'O5']);
      expect(await q('Encounter', { status: 'finished' })).toEqual(['E1', 'E2']);
      expect(await q('CareTeam', { status: 'active' })).toEqual(['CT1', 'CT2']);
    });

    test(':not excludes the matching resources (those without a value stay in)', async () => {
      expect(await q('Patient', { 'gender:not': 'male' })).toEqual(['P2', 'P3', 'P5']);
      expect(await q('Patient', { 'active:not': 'true' })).toEqual(['P4', 'P5']);
      expect(await q('Patient', { 'identifier:not': `${NI}|${IK.P1}` })).toEqual(['P2', 'P3', 'P4', 'P5']);
      expect(await q('Encounter', { 'status:not': 'finished,planned' })).toEqual(['E3']);
    });

    test(':text is not supported: refused under handling=strict, ignored with a warning otherwise', async () => {
      await expectRefused(search('Observation', { 'code:text': 'glucose' }, STRICT), ':text');
      const lenient = await search('Observation', { 'code:text': 'glucose' });
      expect(found(lenient)).toEqual(['O1', 'O2', 'O3', 'O4', 'O5']);
      expect(outcome(lenient)?.issue?.[0]).toMatchObject({ severity: 'warning' });
      expect(JSON.stringify(outcome(lenient))).toContain(':text');
    });
  });

  describe('reference', () => {
    test('Type/id, a bare id, an absolute URL', async () => {
      expect(await q('Encounter', { patient: `Patient/${id.P1}` })).toEqual(['E1', 'E4']);
      expect(await q('Encounter', { patient: id.P2 })).toEqual(['E2']);
      expect(await q('Encounter', { subject: `${ctx.base}/Patient/${id.P3}` })).toEqual(['E3']);
      expect(await q('Observation', { patient: `Patient/${id.P1},Patient/${id.P4}` })).toEqual(['O1', 'O4', 'O5']);
      expect(await q('CareTeam', { participant: `Organization/${id['ORG-ELVA']}` })).toEqual(['CT1', 'CT3']);
      expect(await q('CarePlan', { 'care-team': `CareTeam/${id.CT2}` })).toEqual(['CP2']);
    });

    test('the type tells a Patient and a Group with the same id apart', async () => {
      expect(await q('CarePlan', { subject: id.P1 })).toEqual(['CP1', 'CP4']);
      expect(await q('CarePlan', { subject: `Patient/${id.P1}` })).toEqual(['CP1']);
      expect(await q('CarePlan', { 'subject:Patient': id.P1 })).toEqual(['CP1']);
      expect(await q('CarePlan', { 'subject:Group': id.P1 })).toEqual(['CP4']);
      expect(await q('CarePlan', { subject: `Group/${id.P1}` })).toEqual(['CP4']);
      expect(await q('CarePlan', { patient: id.P1 })).toEqual(['CP1']); // patient = subject.where(resolve() is Patient)
    });

    test('patient is read from the subject rows that point at a Patient (it has no rows of its own)', async () => {
      expect(await q('CarePlan', { patient: `Group/${id.P1}` })).toEqual([]);
      expect(await q('CarePlan', { 'patient:Group': id.P1 })).toEqual([]);
      expect(await q('CarePlan', { 'patient:Patient': id.P1 })).toEqual(['CP1']);
      expect(await q('CarePlan', { 'patient:missing': 'true' })).toEqual(['CP4']);
      expect(await q('CarePlan', { 'patient:missing': 'false' })).toEqual(['CP1', 'CP2', 'CP3']);
      expect(await q('CarePlan', { 'patient.name': 'tammik' })).toEqual(['CP2']);
      expect(included(await search('CarePlan', { _id: `${id.CP1},${id.CP4}`, _include: 'CarePlan:patient' }))).toEqual(['P1']);
      expect(included(await search('CarePlan', { _id: `${id.CP1},${id.CP4}`, _include: 'CarePlan:patient:Group' }))).toEqual([]);
      expect(included(await search('Group', { _id: id.P1, _revinclude: 'CarePlan:patient' }))).toEqual([]);
      expect(included(await search('Group', { _id: id.P1, _revinclude: 'CarePlan:subject' }))).toEqual(['CP4']);
      expect(await q('Group', { '_has:CarePlan:patient:status': 'active' })).toEqual([]);
      expect(await q('Group', { '_has:CarePlan:subject:status': 'active' })).toEqual(['G1']);
      expect(await q('Patient', { '_has:CarePlan:patient:status': 'active', _id: id.P1 })).toEqual(['P1']);
    });

    test(':identifier matches the referenced resource by its identifier', async () => {
      expect(await q('CarePlan', { 'patient:identifier': `${NI}|${IK.P2}` })).toEqual(['CP2']);
      expect(await q('CarePlan', { 'subject:identifier': `${NI}|${IK.P1}` })).toEqual(['CP1']);
      expect(await q('Encounter', { 'patient:identifier': `${NI}|${IK.P1}` })).toEqual(['E1', 'E4']);
      expect(await q('CareTeam', { 'participant:identifier': `${BR}|75006546` })).toEqual(['CT2']);
      expect(await q('CarePlan', { 'patient:identifier': `${NI}|${IK.P4}` })).toEqual([]);
    });
  });

  describe('date', () => {
    test('Patient birthdate: full and partial dates, every prefix, against full and year-only values', async () => {
      // P1 1973-02-10, P2 1968-05-28, P3 1980-01-01, P4 1973-02-25, P5 1973 (the whole year)
      expect(await q('Patient', { birthdate: '1973-02-10' })).toEqual(['P1']);
      expect(await q('Patient', { birthdate: 'eq1973-02-10' })).toEqual(['P1']);
      expect(await q('Patient', { birthdate: '1973' })).toEqual(['P1', 'P4', 'P5']);
      expect(await q('Patient', { birthdate: '1973-02' })).toEqual(['P1', 'P4']); // 1973 as a whole is not inside February
      expect(await q('Patient', { birthdate: 'ap1973-02' })).toEqual(['P1', 'P4', 'P5']);
      expect(await q('Patient', { birthdate: 'ne1973' })).toEqual(['P2', 'P3']);
      expect(await q('Patient', { birthdate: 'ne1973-02' })).toEqual(['P2', 'P3', 'P5']);
      expect(await q('Patient', { birthdate: 'lt1973-02-10' })).toEqual(['P2', 'P5']);
      expect(await q('Patient', { birthdate: 'le1973-02-10' })).toEqual(['P1', 'P2', 'P5']);
      expect(await q('Patient', { birthdate: 'gt1973-02-10' })).toEqual(['P3', 'P4', 'P5']);
      expect(await q('Patient', { birthdate: 'ge1973-02-25' })).toEqual(['P3', 'P4', 'P5']);
      expect(await q('Patient', { birthdate: 'sa1973-02-10' })).toEqual(['P3', 'P4']);
      expect(await q('Patient', { birthdate: 'eb1973-02-10' })).toEqual(['P2']);
      expect(await q('Patient', { birthdate: 'gt1980' })).toEqual([]);
      expect(await q('Patient', { birthdate: ['ge1968-05-28', 'lt1973'] })).toEqual(['P2']);
      expect(await q('Patient', { birthdate: '1968,1980' })).toEqual(['P2', 'P3']);
    });

    test('Encounter date (period): closed, date-only and open periods, every prefix', async () => {
      // E1 2026-01-05T08:00Z–2026-01-10T12:00Z, E2 2026-02-01–2026-02-03, E3 from 2026-01-20T10:00Z (open), E4 none
      expect(await q('Encounter', { date: '2026-01' })).toEqual(['E1']);
      expect(await q('Encounter', { date: '2026' })).toEqual(['E1', 'E2']);
      expect(await q('Encounter', { date: 'ap2026-01' })).toEqual(['E1', 'E3']);
      expect(await q('Encounter', { date: 'ne2026-01' })).toEqual(['E2', 'E3']);
      expect(await q('Encounter', { date: 'gt2026-01-31' })).toEqual(['E2', 'E3']);
      expect(await q('Encounter', { date: 'lt2026-01-06' })).toEqual(['E1']);
      expect(await q('Encounter', { date: 'ge2026-02-02' })).toEqual(['E2', 'E3']);
      expect(await q('Encounter', { date: 'le2026-01-20' })).toEqual(['E1', 'E3']);
      expect(await q('Encounter', { date: 'sa2026-01-10' })).toEqual(['E2', 'E3']);
      expect(await q('Encounter', { date: 'eb2026-01-20' })).toEqual(['E1']);
      expect(await q('Encounter', { date: 'lt2026-01-05T08:00:00Z' })).toEqual([]);
      expect(await q('Encounter', { date: 'le2026-01-05T08:00:00Z' })).toEqual(['E1']);
      expect(await q('Encounter', { date: 'gt2026-01-31T23:59:59Z' })).toEqual(['E2', 'E3']);
      expect(await q('Encounter', { date: 'gt2026-02-04' })).toEqual(['E3']); // the open end goes on forever
      expect(await q('CarePlan', { date: 'lt2026' })).toEqual(['CP4']);
    });

    test('_lastUpdated', async () => {
      expect(await q('Patient', { _lastUpdated: `lt${mark}` })).toEqual(['P1', 'P2', 'P3', 'P4']);
      expect(await q('Patient', { _lastUpdated: `gt${mark}` })).toEqual(['P5']);
      expect(await q('Patient', { _lastUpdated: `ge${mark.slice(0, 4)}` })).toEqual(['P1', 'P2', 'P3', 'P4', 'P5']);
      expect(await q('Patient', { _lastUpdated: `lt${mark.slice(0, 4)}` })).toEqual([]);
      expect(await q('Patient', { _lastUpdated: mark.slice(0, 10) })).toEqual(
        // all written today (UTC), unless the suite straddles midnight
        new Date().toISOString().slice(0, 10) === mark.slice(0, 10) ? ['P1', 'P2', 'P3', 'P4', 'P5'] : ['P1', 'P2', 'P3', 'P4'],
      );
    });

    test('an invalid date is refused with an OperationOutcome', async () => {
      await expectRefused(search('Patient', { birthdate: 'yesterday' }), 'yesterday');
      await expectRefused(search('Encounter', { date: 'gt2026-13' }), '2026-13');
    });
  });

  describe('quantity and number', () => {
    test('Observation value-quantity with and without system and unit', async () => {
      // O1 6.1 mmol/L (UCUM), O2 5.4 mmol/L (UCUM), O3 7.2 mg/dL (UCUM), O4 5.5 "mmol/L" (no system), O5 no value
      expect(await q('Observation', { 'value-quantity': `gt5.4|${UCUM}|mmol/L` })).toEqual(['O1']);
      expect(await q('Observation', { 'value-quantity': 'gt5.4' })).toEqual(['O1', 'O3', 'O4']);
      expect(await q('Observation', { 'value-quantity': 'gt5.4||mmol/L' })).toEqual(['O1', 'O4']);
      expect(await q('Observation', { 'value-quantity': `ge5.4|${UCUM}|mmol/L` })).toEqual(['O1', 'O2']);
      expect(await q('Observation', { 'value-quantity': '5.4' })).toEqual(['O2']); // 5.4 means [5.35, 5.45)
      expect(await q('Observation', { 'value-quantity': '5' })).toEqual(['O2']); // 5 means [4.5, 5.5)
      expect(await q('Observation', { 'value-quantity': 'ne5.4' })).toEqual(['O1', 'O3', 'O4']);
      expect(await q('Observation', { 'value-quantity': 'lt6.1' })).toEqual(['O2', 'O4']);
      expect(await q('Observation', { 'value-quantity': 'le6.1||mmol/L' })).toEqual(['O1', 'O2', 'O4']);
      expect(await q('Observation', { 'value-quantity': 'ap6.1' })).toEqual(['O1', 'O4']); // ±10 %: 5.5 in, 5.4 and 7.2 out
      expect(await q('Observation', { 'value-quantity': `7.2|${UCUM}|mg/dL` })).toEqual(['O3']);
      expect(await q('Observation', { 'value-quantity': `7.2|${UCUM}|mmol/L` })).toEqual([]);
    });

    test('RiskAssessment probability (number)', async () => {
      // R1 0.35, R2 0.8, R3 a Range (not indexed as a number)
      expect(await q('RiskAssessment', { probability: 'gt0.5' })).toEqual(['R2']);
      expect(await q('RiskAssessment', { probability: 'lt0.5' })).toEqual(['R1']);
      expect(await q('RiskAssessment', { probability: '0.35' })).toEqual(['R1']);
      expect(await q('RiskAssessment', { probability: '0.3' })).toEqual([]); // [0.25, 0.35)
      expect(await q('RiskAssessment', { probability: 'ge0.35' })).toEqual(['R1', 'R2']);
      expect(await q('RiskAssessment', { probability: 'ne0.8' })).toEqual(['R1']);
      expect(await q('RiskAssessment', { 'probability:missing': 'true' })).toEqual(['R3']);
    });

    test('a number that is not one is refused with an OperationOutcome', async () => {
      await expectRefused(search('RiskAssessment', { probability: 'gtlikely' }), 'likely');
      await expectRefused(search('Observation', { 'value-quantity': 'abc||mmol/L' }), 'abc');
    });
  });

  describe(':missing', () => {
    test('true: no value; false: some value; on every parameter type', async () => {
      expect(await q('Patient', { 'gender:missing': 'true' })).toEqual(['P5']);
      expect(await q('Patient', { 'gender:missing': 'false' })).toEqual(['P1', 'P2', 'P3', 'P4']);
      expect(await q('Patient', { 'address-city:missing': 'true' })).toEqual(['P5']);
      expect(await q('Patient', { 'active:missing': 'false' })).toEqual(['P1', 'P2', 'P3', 'P4']);
      expect(await q('Encounter', { 'date:missing': 'true' })).toEqual(['E4']);
      expect(await q('CarePlan', { 'care-team:missing': 'true' })).toEqual(['CP3', 'CP4']);
      expect(await q('CarePlan', { 'patient:missing': 'true' })).toEqual(['CP4']);
      expect(await q('Observation', { 'value-quantity:missing': 'true' })).toEqual(['O5']);
      expect(await q('Observation', { 'value-quantity:missing': 'false' })).toEqual(['O1', 'O2', 'O3', 'O4']);
    });
  });

  describe('chained and reverse chained', () => {
    test('chained parameters follow the reference', async () => {
      expect(await q('CarePlan', { 'patient.identifier': `${NI}|${IK.P1}` })).toEqual(['CP1']);
      expect(await q('CarePlan', { 'subject.identifier': `${NI}|${IK.P1}` })).toEqual(['CP1']); // not the Group's plan
      expect(await q('CarePlan', { 'patient.family': 'tamm' })).toEqual(['CP1', 'CP2']);
      expect(await q('CarePlan', { 'subject:Patient.birthdate': '1973' })).toEqual(['CP1']);
      expect(await q('CarePlan', { 'subject:Group.type': 'person' })).toEqual(['CP4']);
      expect(await q('CarePlan', { 'subject:Group.type': 'animal' })).toEqual([]);
      // Group has no "name" search parameter: refused under strict handling
      await expectRefused(search('CarePlan', { 'subject:Group.name': 'same' }, STRICT), 'name');
      expect(await q('Observation', { 'patient.gender': 'female', code: `${LOINC}|15074-8` })).toEqual(['O2']);
      expect(await q('CareTeam', { 'participant:Organization.identifier': `${BR}|75008427` })).toEqual(['CT1', 'CT3']);
      expect(await q('CarePlan', { 'care-team.status': 'active' })).toEqual(['CP1', 'CP2']);
    });

    test('_has: the resources others point at through a parameter', async () => {
      expect(await q('Patient', { '_has:Encounter:patient:status': 'finished' })).toEqual(['P1', 'P2']);
      expect(await q('Patient', { '_has:Encounter:patient:status': 'planned' })).toEqual(['P1']);
      expect(await q('Patient', { '_has:Observation:subject:value-quantity': 'gt6' })).toEqual(['P1', 'P3']);
      expect(await q('Patient', { '_has:CareTeam:patient:participant': `Organization/${id['ORG-TARTU']}` })).toEqual(['P2']);
      expect(await q('Organization', { '_has:CareTeam:participant:status': 'inactive' })).toEqual(['ORG-ELVA']);
      expect(await q('Patient', { '_has:Encounter:patient:status': 'cancelled' })).toEqual([]);
    });
  });

  describe('_include and _revinclude', () => {
    test('_include, typed _include and _include:iterate', async () => {
      const b = await search('CarePlan', { _id: id.CP1, _include: 'CarePlan:care-team' });
      expect(found(b)).toEqual(['CP1']);
      expect(included(b)).toEqual(['CT1']);

      expect(included(await search('CarePlan', { _id: `${id.CP1},${id.CP4}`, _include: 'CarePlan:subject' }))).toEqual(['G1', 'P1']);
      expect(included(await search('CarePlan', { _id: `${id.CP1},${id.CP4}`, _include: 'CarePlan:subject:Patient' }))).toEqual(['P1']);

      const iter = await search('CarePlan', { _id: id.CP1, _include: 'CarePlan:care-team', '_include:iterate': 'CareTeam:participant' });
      expect(included(iter)).toEqual(['CT1', 'ORG-ELVA']);
      // without :iterate, CareTeam:participant applies only to the CarePlan matches, so nothing more
      expect(included(await search('CarePlan', { _id: id.CP1, _include: ['CarePlan:care-team', 'CareTeam:participant'] }))).toEqual(['CT1']);
    });

    test('_revinclude and _revinclude:iterate', async () => {
      const b = await search('Patient', { _id: id.P1, _revinclude: 'CarePlan:subject' });
      expect(found(b)).toEqual(['P1']);
      expect(included(b)).toEqual(['CP1']); // CP4 points at Group/<same id>
      expect(included(await search('Patient', { _id: id.P1, _revinclude: 'Encounter:patient' }))).toEqual(['E1', 'E4']);
      expect(included(await search('Patient', { _id: id.P1, _revinclude: ['CarePlan:subject', 'Provenance:target'] }))).toEqual(['CP1']);
      const iter = await search('Patient', { _id: id.P1, _revinclude: 'CarePlan:subject', '_revinclude:iterate': 'Provenance:target' });
      expect(included(iter)).toEqual(['CP1', 'PROV1']);
      const both = await search('CarePlan', { 'patient.identifier': `${NI}|${IK.P1}`, _include: 'CarePlan:care-team', _revinclude: 'Provenance:target' });
      expect(found(both)).toEqual(['CP1']);
      expect(included(both)).toEqual(['CT1', 'PROV1']);
    });

    test('_include=* and _revinclude=* follow every reference parameter', async () => {
      expect(included(await search('CarePlan', { _id: id.CP1, _include: '*' }))).toEqual(['CT1', 'P1']);
      // everything that points at P1 through any parameter; not CP4 (it points at Group/<same id>), nothing of P2
      const rev = included(await search('Patient', { _id: id.P1, _revinclude: '*' }));
      expect(rev).toEqual(expect.arrayContaining(['CP1', 'E1', 'E4', 'O1', 'O4', 'R1']));
      expect(rev).not.toContain('CP4');
      expect(rev).not.toContain('E2');
      expect(rev).not.toContain('O2');
      // from a page of several types' worth of frontier (:iterate): the Provenance that points at CP1
      const iter = await search('Patient', { _id: id.P1, _revinclude: 'CarePlan:subject', '_revinclude:iterate': '*' });
      expect(included(iter)).toEqual(expect.arrayContaining(['CP1', 'PROV1']));
    });
  });

  describe('_sort, _count and paging', () => {
    test('_sort ascending, descending and by several keys (missing values last)', async () => {
      expect(ordered(await search('Patient', { _sort: 'family' }))).toEqual(['P5', 'P3', 'P4', 'P1', 'P2']); // kask, ounapuu, saartamm, tamm, tammik
      expect(ordered(await search('Patient', { _sort: '-family' }))).toEqual(['P2', 'P1', 'P4', 'P3', 'P5']);
      expect(ordered(await search('Patient', { _sort: 'birthdate' }))).toEqual(['P2', 'P5', 'P1', 'P4', 'P3']);
      expect(ordered(await search('Patient', { _sort: 'gender,-birthdate' }))).toEqual(['P3', 'P2', 'P4', 'P1', 'P5']);
      expect(ordered(await search('Encounter', { _sort: '-date' }))).toEqual(['E2', 'E3', 'E1', 'E4']);
      expect(ordered(await search('Observation', { _sort: '-value-quantity', 'value-quantity:missing': 'false' }))).toEqual(['O3', 'O1', 'O4', 'O2']);
    });

    test('_count pages are followed with nextPage to the end, in the sorted order, without repeats', async () => {
      const walk = async (first: Bundle): Promise<{ seen: string[]; pages: number }> => {
        const seen: string[] = [];
        let pages = 0;
        let page = first;
        for (;;) {
          pages++;
          expect(matches(page).length).toBeLessThanOrEqual(2);
          seen.push(...ordered(page));
          const next = client.nextPage({ bundle: page as never });
          if (!next) break;
          page = (await next) as unknown as Bundle;
        }
        return { seen, pages };
      };
      const plain = await walk(await search('Patient', { _count: '2' }));
      expect(plain.seen.sort()).toEqual(['P1', 'P2', 'P3', 'P4', 'P5']);
      expect(plain.pages).toBe(3);
      const sorted = await walk(await search('Patient', { _count: '2', _sort: 'gender,-birthdate' }));
      expect(sorted.seen).toEqual(['P3', 'P2', 'P4', 'P1', 'P5']);
      const filtered = await walk(await search('Observation', { _count: '2', code: '15074-8', _sort: '-_lastUpdated' }));
      expect(filtered.seen.sort()).toEqual(['O1', 'O2', 'O4', 'O5']);
      expect(filtered.pages).toBe(2);
    });

    test('_summary=count, _total=accurate and _elements', async () => {
      const count = await search('Patient', { gender: 'male', _summary: 'count' });
      expect(count.total).toBe(2);
      expect(count.entry ?? []).toHaveLength(0);

      const total = await search('Patient', { family: 'tamm', _count: '1', _total: 'accurate' });
      expect(total.total).toBe(2);
      expect(matches(total)).toHaveLength(1);

      const el = await search('Patient', { _id: id.P1, _elements: 'name,birthDate' });
      expect(found(el)).toEqual(['P1']);
      const p = matches(el)[0].resource as Patient;
      expect(Object.keys(p).sort()).toEqual(['birthDate', 'id', 'meta', 'name', 'resourceType']);
      expect(p.meta?.tag).toEqual(expect.arrayContaining([expect.objectContaining({ code: 'SUBSETTED' })]));
    });
  });

  describe('unknown parameters', () => {
    test('Prefer: handling=strict → refused with an OperationOutcome', async () => {
      await expectRefused(search('Patient', { shoeSize: '44' }, STRICT), 'shoeSize');
      await expectRefused(search('Patient', { _sort: 'shoeSize' }, STRICT), 'shoeSize');
      await expectRefused(search('CarePlan', { _include: 'CarePlan:shoeSize' }, STRICT), 'shoeSize');
      await expectRefused(search('Patient', { 'family:below': 'tamm' }, STRICT), ':below');
      // known parameters still work under strict handling
      expect(found(await search('Patient', { family: 'tamm' }, STRICT))).toEqual(['P1', 'P2']);
    });

    // R4 (http.html#search): a search the server cannot process is a 400 Bad Request (422 is for content that
    // fails validation on create/update)
    test('a refused search is a 400 Bad Request, as R4 asks', async () => {
      expect((await refused(search('Patient', { shoeSize: '44' }, STRICT))).status).toBe(400);
      expect((await refused(search('Observation', { 'code:text': 'glucose' }, STRICT))).status).toBe(400);
      expect((await refused(search('Patient', { birthdate: 'yesterday' }))).status).toBe(400);
    });

    test('lenient (the default, or Prefer: handling=lenient) → ignored, with a warning', async () => {
      for (const headers of [undefined, { Prefer: 'handling=lenient' }]) {
        const b = await search('Patient', { shoeSize: '44', gender: 'female' }, headers);
        expect(found(b)).toEqual(['P2', 'P3']);
        expect(outcome(b)?.issue?.[0]).toMatchObject({ severity: 'warning' });
      }
    });
  });
});
