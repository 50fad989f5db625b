/**
 * ADT^A40 with several PID/MRG pairs: every pair is merged (each retired Patient inactive and replaced-by its
 * survivor, one active plan each), and a pair that cannot be applied makes the message AE naming it — never AA with
 * a pair dropped.
 */
import type { Bundle, CarePlan, Patient } from '@medplum/fhirtypes';
import { backends } from '../../helpers/backends.js';
import { useGateway } from '../../helpers/gateway.js';
import { eeDischarge } from '../../fixtures/hl7v2/messages.js';
import { deterministicId, isikukoodCheckDigit, SYSTEMS } from '../../../src/fhir/identifiers.js';

const ik = (ten: string) => ten + isikukoodCheckDigit(ten);
const id = (isikukood: string) => deterministicId('Patient', SYSTEMS.isikukood, isikukood);

function merge(pairs: [string, string][], controlId: string): string {
  return [
    `MSH|^~\\&|ELVA_HIS|ELVA_HAIGLA|CARE_GW|TARTUMAA|20261115090000||ADT^A40^ADT_A39|${controlId}|P|2.5.1`,
    `EVN|A40|20261115090000`,
    ...pairs.flatMap(([survivor, retired]) => [`PID|1||${survivor}^^^EE^NI||Tamm^Jüri||19730210|M|||Kesk 1^^Elva^^61507^EE^H^^0171`, `MRG|${retired}^^^EE^NI`]),
  ].join('\r');
}

describe.each(backends())('merge messages with several pairs on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const hl7 = async (m: string) => (await fetch(`${ctx.url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: m })).text();
  const get = async <T>(p: string) => (await (await fetch(`${ctx.base}${p}`)).json()) as T;

  test('every PID/MRG pair is merged', async () => {
    const [s1, r1, s2, r2] = ['3730210401', '3730210402', '3730210403', '3730210404'].map(ik);
    for (const [k, who] of [s1, r1, s2, r2].entries()) expect(await hl7(eeDischarge({ isikukood: who, controlId: `MP-${k}`, visit: `V-MP-${k}`, pid3: `${who}^^^EE^NI` }))).toContain('MSA|AA');
    expect(await hl7(merge([[s1, r1], [s2, r2]], 'MP-M'))).toContain('MSA|AA');
    for (const [survivor, retired] of [[s1, r1], [s2, r2]]) {
      const p = await get<Patient>(`/Patient/${id(retired)}`);
      expect(p.active).toBe(false);
      expect(p.link?.some((l) => l.type === 'replaced-by' && l.other.reference === `Patient/${id(survivor)}`)).toBe(true);
      const plans = (await get<Bundle<CarePlan>>(`/CarePlan?subject=Patient/${id(survivor)}&status=active`)).entry ?? [];
      expect(plans).toHaveLength(1);
    }
  });

  test('a pair that cannot be applied makes the message AE, naming the pair', async () => {
    const [s3, r3] = ['3730210405', '3730210406'].map(ik);
    for (const [k, who] of [s3, r3].entries()) await hl7(eeDischarge({ isikukood: who, controlId: `MQ-${k}`, visit: `V-MQ-${k}`, pid3: `${who}^^^EE^NI` }));
    const ack = await hl7(merge([[s3, r3], [ik('3730210407'), '37302104099']], 'MQ-M'));
    expect(ack).toMatch(/MSA\|AE/);
    expect(ack).toMatch(/ERR\|\|MRG\^2\^1/); // ERR-2: the second MRG segment
  });
});
