/**
 * The child's team (the children's case-management model): a municipal decision that names a school and its special
 * educational needs coordinator (HEVKO) brings both into the shared CareTeam for the decision's period — active while
 * the period runs, also when it has an end date in the future; a legal guardian carries the v3 RoleCode GUARD on the
 * RelatedPerson and the guardian role in the team, whether the municipality or a hospital (NK1-7) says so.
 */
import type { Bundle, CareTeam, RelatedPerson } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';
import { deterministicId, isikukoodCheckDigit, SYSTEMS } from '../../src/fhir/identifiers.js';

const ik = (ten: string) => ten + isikukoodCheckDigit(ten);
const GUARD = { system: 'http://terminology.hl7.org/CodeSystem/v3-RoleCode', code: 'GUARD' };

describe.each(backends())("the child's team on %s", (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const get = async <T>(p: string) => (await (await fetch(`${ctx.base}${p}`)).json()) as T;
  const teamOf = async (patient: string) => (await get<Bundle<CareTeam>>(`/CareTeam?subject=Patient/${patient}`)).entry![0].resource!;
  const roleOf = (p: NonNullable<CareTeam['participant']>[number]) => p.role?.[0]?.coding?.[0]?.code;

  test('school and HEVKO join for the period of the decision (an end in the future keeps them active); a guardian is GUARD', async () => {
    const child = ik('5120405110');
    const decision = (end: string) => ({
      otsused: [
        {
          number: 'E-CT-1',
          kuupaev: '2026-10-20',
          klient: { isikukood: child, nimi: { eesnimi: 'Rasmus', perenimi: 'Pärn' }, aadress: 'Pargi 3, Elva' },
          teenus: { kood: 'LJK', seis: 'kehtiv', algus: '2026-09-01', lopp: end },
          hooldajad: [{ nimi: 'Tiina Pärn', seos: 'eestkostja', telefon: '+372 5666 7777' }],
          kool: { nimi: 'Elva Gümnaasium', hev_koordinaator: { nimi: 'Evelin Org', telefon: '+372 730 1111' } },
        },
      ],
    });
    const post = (body: unknown) => fetch(`${ctx.url}/social-care/elva`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post(decision('2031-06-15'))).status).toBe(200);
    const patient = deterministicId('Patient', SYSTEMS.isikukood, child);
    const team = await teamOf(patient);
    const school = team.participant!.find((p) => roleOf(p) === 'school')!;
    const hevko = team.participant!.find((p) => roleOf(p) === 'special-needs-coordinator')!;
    expect(school.period).toEqual({ start: '2026-09-01', end: '2031-06-15' });
    expect(hevko.period).toEqual({ start: '2026-09-01', end: '2031-06-15' });
    expect(hevko.onBehalfOf?.reference).toBe(school.member!.reference);
    // the school's team membership is current: its organisation finds the child's team
    const bySchool = await get<Bundle<CareTeam>>(`/CareTeam?participant=${school.member!.reference}`);
    expect(bySchool.entry!.map((e) => e.resource!.id)).toContain(team.id);
    // the guardian: GUARD on the RelatedPerson, the legal guardian role in the team
    const guardian = (await get<Bundle<RelatedPerson>>(`/RelatedPerson?patient=Patient/${patient}`)).entry!.map((e) => e.resource!)[0];
    expect(guardian.relationship!.flatMap((r) => r.coding ?? [])).toContainEqual(expect.objectContaining(GUARD));
    expect(team.participant!.some((p) => p.member?.reference === `RelatedPerson/${guardian.id}` && p.role?.[0]?.coding?.[0]?.code === '58626002')).toBe(true);
    // the same decision sent again: nobody twice; then ended early: the end moves, the participation stays as history
    expect((await post(decision('2031-06-15'))).status).toBe(200);
    expect((await teamOf(patient)).participant!.filter((p) => roleOf(p) === 'school')).toHaveLength(1);
    expect((await post(decision('2026-10-31'))).status).toBe(200);
    const ended = (await teamOf(patient)).participant!.filter((p) => roleOf(p) === 'school');
    expect(ended).toHaveLength(1);
    expect(ended[0].period?.end).toBe('2026-10-31');
  });

  test('a hospital that names a parent as guardian in NK1-7 gives them GUARD and the guardian role', async () => {
    const child = ik('5120405111');
    const message = eeDischarge({ isikukood: child, controlId: 'CT-2', visit: 'V-CT-2' }).replace(/NK1\|[^\r]*/, 'NK1|1|Pärn^Tiina|MTH^Mother^HL70063||^PRN^PH^^^^^^^^^+3725666777||GRD^Guardian^HL70063');
    expect(await (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: message })).text()).toContain('MSA|AA');
    const patient = deterministicId('Patient', SYSTEMS.isikukood, child);
    const parent = (await get<Bundle<RelatedPerson>>(`/RelatedPerson?patient=Patient/${patient}`)).entry!.map((e) => e.resource!)[0];
    expect(parent.relationship!.flatMap((r) => r.coding ?? [])).toEqual(expect.arrayContaining([expect.objectContaining({ code: 'MTH' }), expect.objectContaining(GUARD)]));
    const team = await teamOf(patient);
    expect(team.participant!.some((p) => p.member?.reference === `RelatedPerson/${parent.id}` && p.role?.[0]?.coding?.[0]?.code === '58626002')).toBe(true);
  });
});
