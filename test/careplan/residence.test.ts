/**
 * The municipality of residence as Estonian senders write it: an EHAK code in XAD-9, the municipality's name in
 * XAD-4 (state) or XAD-3, a settlement only the directory places. A move ends the old municipality's participation,
 * brings the new one in, and hands it the open needs-assessment Tasks; an address no part of which places the person
 * is a warning in the ACK (ERR severity W) and in the message log, never silent.
 */
import type { Bundle, CareTeam, Task } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';
import { deterministicId, isikukoodCheckDigit, SYSTEMS } from '../../src/fhir/identifiers.js';
import { municipalityOfAddress } from '../../src/county/directory.js';

const ik = (ten: string) => ten + isikukoodCheckDigit(ten);

/** The discharge with PID-11 replaced by `xad` (the rest of the message as the fixture has it). */
function withAddress(o: Parameters<typeof eeDischarge>[0], xad: string): string {
  return eeDischarge(o)
    .split('\r')
    .map((s) => (s.startsWith('PID|') ? s.split('|').map((f, i) => (i === 11 ? xad : f)).join('|') : s))
    .join('\r');
}

test('the directory places an address by EHAK, by the municipality in state/district/city, and by a settlement', () => {
  expect(municipalityOfAddress({ state: 'Kambja vald' })?.ehak).toBe('0283');
  expect(municipalityOfAddress({ district: 'Nõo vald', city: 'Tõravere' })?.ehak).toBe('0528');
  expect(municipalityOfAddress({ city: 'Rõngu alevik' })?.ehak).toBe('0171');
  expect(municipalityOfAddress({ line: ['Pargi 3, Ülenurme alevik'] })?.ehak).toBe('0283');
  expect(municipalityOfAddress({ city: 'Tartu', state: 'Tartumaa' })?.ehak).toBe('0793');
  expect(municipalityOfAddress({ state: 'Tartu vald' })?.ehak).toBe('0796');
  expect(municipalityOfAddress({ city: 'Tundmatu küla' })).toBeUndefined();
});

describe.each(backends())('residence on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const hl7 = async (m: string) => (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: m })).text();
  const get = async <T>(p: string) => (await (await fetch(`${ctx.base}${p}`)).json()) as T;
  const openMunicipalities = async (patient: string) => {
    const team = (await get<Bundle<CareTeam>>(`/CareTeam?subject=Patient/${patient}`)).entry![0].resource!;
    return (team.participant ?? []).filter((p) => p.role?.[0]?.coding?.[0]?.code === 'municipality-of-residence' && !p.period?.end).map((p) => p.member!.reference);
  };

  test('a move written in XAD-4 takes the team and the open assessment Tasks to the new municipality', async () => {
    const who = ik('3730210201');
    const patient = deterministicId('Patient', SYSTEMS.isikukood, who);
    expect(await hl7(eeDischarge({ isikukood: who, controlId: 'R-1', visit: 'V-R-1', ehak: '0171', eventTime: '20261110120000' }))).toContain('MSA|AA');
    expect(await openMunicipalities(patient)).toEqual(['Organization/ehak-0171']);
    const tasks = async (owner: string) => (await get<Bundle<Task>>(`/Task?owner=${owner}&patient=Patient/${patient}&status=requested`)).entry?.map((e) => e.resource!) ?? [];
    const assessments = await tasks('Organization/ehak-0171');
    expect(assessments.length).toBeGreaterThan(0);
    // A08: the municipality only in the state component, no EHAK code
    const ack = await hl7(withAddress({ isikukood: who, controlId: 'R-2', visit: 'V-R-1', trigger: 'A08', eventTime: '20261112120000' }, 'Pargi 3^^Ülenurme^Kambja vald^61714^EE^H'));
    expect(ack).toContain('MSA|AA');
    expect(await openMunicipalities(patient)).toEqual(['Organization/ehak-0283']);
    expect(await tasks('Organization/ehak-0171')).toEqual([]);
    const handed = await tasks('Organization/ehak-0283');
    expect(handed.map((t) => t.id).sort()).toEqual(assessments.map((t) => t.id).sort());
    expect(handed[0].note?.some((n) => /Handed over from Organization\/ehak-0171 to Kambja vald/.test(n.text ?? ''))).toBe(true);
    // the municipality's worklist, by id and by the owner's identifier chain (its EHAK code)
    const byChain = await get<Bundle<Task>>(`/Task?owner:Organization.identifier=https://fhir.ee/sid/ehak|0283&status=requested`);
    expect(byChain.entry!.map((e) => e.resource!.id)).toEqual(expect.arrayContaining(assessments.map((t) => t.id)));
  });

  test('a settlement alone places the person; an address nothing places is a warning, and the team keeps its municipality', async () => {
    const who = ik('3730210202');
    const patient = deterministicId('Patient', SYSTEMS.isikukood, who);
    expect(await hl7(withAddress({ isikukood: who, controlId: 'R-3', visit: 'V-R-3', eventTime: '20261110120000' }, 'Vabriku 2^^Rõngu alevik^^61601^EE^H'))).toContain('MSA|AA');
    expect(await openMunicipalities(patient)).toEqual(['Organization/ehak-0171']);
    const ack = await hl7(withAddress({ isikukood: who, controlId: 'R-4', visit: 'V-R-3', trigger: 'A08', eventTime: '20261112120000' }, 'Kuuse 9^^Tundmatu küla^^^EE^H'));
    expect(ack).toContain('MSA|AA');
    expect(ack).toMatch(/ERR\|[^\r]*\|W\|/);
    expect(ack).toContain('municipality of residence cannot be determined');
    expect(await openMunicipalities(patient)).toEqual(['Organization/ehak-0171']);
    const log = (await (await fetch(`${ctx.url}/admin/messages?_count=5`)).json()) as { entries: { controlId?: string; id: string }[] };
    const entry = log.entries.find((e) => e.controlId === 'R-4')!;
    const full = (await (await fetch(`${ctx.url}/admin/messages/${entry.id}`)).json()) as { outcome?: { issue: { severity: string; diagnostics?: string }[] } };
    expect(full.outcome!.issue.some((i) => i.severity === 'warning' && /municipality of residence/.test(i.diagnostics ?? ''))).toBe(true);
  });
});
