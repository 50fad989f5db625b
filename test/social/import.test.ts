/**
 * Municipal social-care import end to end over HTTP, on every backend: both example sources land in the shared
 * CarePlan/CareTeam, each rejection rule names row, field and reason while good rows still land, re-posting
 * changes nothing, a changed row makes a new version with Provenance naming file and row, a third municipality
 * is onboarded with a mapping file alone, and CSV quirks (BOM, CRLF, quoted delimiters, windows-1257) are read.
 */
import fs from 'node:fs';
import path from 'node:path';
import iconv from 'iconv-lite';
import type { Bundle, CarePlan, CareTeam, OperationOutcome, Practitioner, Provenance, RelatedPerson, ServiceRequest } from '@medplum/fhirtypes';
import type { ImportReport } from '../../src/social/import.js';
import { backends, postgresBackend, PG_URL, tempDir, type Backend } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';

const EXAMPLES = path.resolve('mappings/social/examples');
const NI = 'https://fhir.ee/sid/pid/est/ni';
const SERVICES = 'https://care-gateway.ee/fhir/CodeSystem/social-services';
const HEADER = 'Otsuse nr;Otsuse kuupäev;Isikukood;Eesnimi;Perekonnanimi;Aadress;Teenus;Algus;Lõpp;Maht;Ühik;Periood;Juhtumitöötaja;Ametikoht;Telefon;E-post;Teenuseosutaja;Hooldaja;Seos;Hooldaja telefon;Märkus';

/** one Tartu linn CSV row; fields by header name, the rest empty */
function tartuRow(v: Partial<Record<string, string>>): string {
  return HEADER.split(';')
    .map((h) => {
      const x = v[h] ?? '';
      return /[;"\n]/.test(x) ? `"${x.replace(/"/g, '""')}"` : x;
    })
    .join(';');
}
const good = (n: number, extra: Partial<Record<string, string>> = {}) =>
  tartuRow({ 'Otsuse nr': `T-${n}`, Isikukood: '35602281007', Teenus: 'Koduteenus', Algus: '01.12.2026', Maht: '2,5', Ühik: 'tundi', Periood: 'nädalas', Juhtumitöötaja: 'Mari Tamm', Ametikoht: 'sotsiaaltöötaja', ...extra });

/**
 * Every test on every backend, and on PostgreSQL once more with the lanes in two import worker threads
 * (IMPORT_WORKERS=2; src/social/workers.ts): the same reports, plans and refusals, the mappings folder included.
 */
const variants: [string, () => Backend, string][] = backends().map(([name, make]) => [name, make, '0']);
if (PG_URL) variants.push(['postgres with two import workers', () => postgresBackend(PG_URL!), '2']);

describe.each(variants)('social-care import on %s', (_name, makeBackend, workers) => {
  const extraMappings = tempDir('cg-social-maps-');
  const suite = useGateway(makeBackend, { SOCIAL_MAPPINGS_DIR: extraMappings, IMPORT_WORKERS: workers });
  let base: string;
  let url: string;
  beforeAll(() => ({ base, url } = suite));
  afterAll(() => {
    fs.rmSync(extraMappings, { recursive: true, force: true });
  });

  const post = async (source: string, body: string | Buffer, type = 'text/csv'): Promise<{ status: number; report: ImportReport }> => {
    const res = await fetch(`${url}/social-care/${source}`, { method: 'POST', headers: { 'Content-Type': type }, body: typeof body === 'string' ? body : new Uint8Array(body) });
    return { status: res.status, report: (await res.json()) as ImportReport };
  };
  const search = async <T>(q: string): Promise<T[]> => {
    const b = (await (await fetch(`${base}/${q}`)).json()) as Bundle;
    return (b.entry ?? []).filter((e) => e.search?.mode !== 'include').map((e) => e.resource as T);
  };
  const planOf = async (isikukood: string) => {
    const plans = await search<CarePlan>(`CarePlan?patient.identifier=${NI}|${isikukood}&status=active`);
    expect(plans).toHaveLength(1);
    const team = (await search<CareTeam>(`CareTeam?patient.identifier=${NI}|${isikukood}`))[0];
    return { plan: plans[0], team };
  };
  const activitySrs = async (plan: CarePlan) =>
    Promise.all((plan.activity ?? []).map(async (a) => (await (await fetch(`${base}/${a.reference!.reference}`)).json()) as ServiceRequest));

  test('the Tartu linn CSV example (BOM, CRLF, quoted delimiters, decimal comma) lands in the shared plans', async () => {
    const bytes = fs.readFileSync(path.join(EXAMPLES, 'tartu-linn.csv'));
    expect(bytes.subarray(0, 3)).toEqual(Buffer.from([0xef, 0xbb, 0xbf]));
    const { status, report } = await post('tartu-linn', bytes);
    expect(status).toBe(200);
    expect(report.rows).toEqual({ total: 4, accepted: 4, rejected: 0, changed: 4 });

    const { plan, team } = await planOf('44501231007');
    const [sr] = await activitySrs(plan);
    expect(sr.code!.coding![0]).toMatchObject({ system: SERVICES, code: 'home-care' });
    expect(sr.code!.text).toBe('Koduteenus');
    expect(sr.status).toBe('active');
    expect(sr.occurrenceTiming!.repeat).toMatchObject({ boundsPeriod: { start: '2026-11-10', end: '2027-05-09' }, frequency: 1, period: 1, periodUnit: 'wk' });
    expect(sr.quantityQuantity).toMatchObject({ value: 4.5, code: 'h', system: 'http://unitsofmeasure.org' });
    expect(sr.note![0].text).toBe('Vajab abi poes käimisel; elab üksi');
    expect(sr.requester!.reference).toBe('Organization/ehak-0793');
    expect(sr.identifier![0]).toEqual({ system: 'https://care-gateway.ee/fhir/sid/social-decision/0793', value: 'TL-2026/1041' });

    // the municipality with its registry code and EHAK code, the case worker with telecom, the daughter as caregiver
    const org = (await (await fetch(`${base}/Organization/ehak-0793`)).json()) as { identifier: { system: string; value: string }[] };
    expect(org.identifier).toEqual(expect.arrayContaining([{ system: 'https://fhir.ee/sid/org/est/br', value: '75006546' }, { system: 'https://fhir.ee/sid/ehak', value: '0793' }]));
    const roles = team.participant!.map((p) => `${p.role![0].coding![0].code}:${p.member!.display ?? p.member!.reference}`);
    expect(roles).toEqual(expect.arrayContaining(['106328005:Mari Tamm', 'municipality-of-residence:Organization/ehak-0793']));
    const worker = team.participant!.find((p) => p.member!.display === 'Mari Tamm')!;
    expect(worker.onBehalfOf!.reference).toBe('Organization/ehak-0793');
    const cw = (await (await fetch(`${base}/${worker.member!.reference}`)).json()) as Practitioner;
    expect(cw.telecom).toEqual(expect.arrayContaining([expect.objectContaining({ system: 'email', value: 'mari.tamm@tartu.ee' })]));
    const carer = team.participant!.find((p) => p.member!.reference!.startsWith('RelatedPerson/'))!;
    const rp = (await (await fetch(`${base}/${carer.member!.reference}`)).json()) as RelatedPerson;
    expect(rp.name![0].text).toBe('Liis Kõiv');
    expect(rp.relationship![0].coding![0]).toMatchObject({ code: 'DAU' });

    // a respite period already over is a completed activity; the child's worker is the child-protection specialist
    const respite = await activitySrs((await planOf('45203141000')).plan);
    expect(respite[0].status).toBe('completed');
    expect(respite[0].quantityQuantity).toMatchObject({ value: 14, code: 'd' });
    const child = await planOf('61509031009');
    expect(child.team.participant!.map((p) => p.role![0].coding![0].code)).toContain('child-protection-specialist');
  });

  test('the Elva nested JSON example lands: personal assistant, and a child with school and SEN coordinator', async () => {
    const { status, report } = await post('elva', fs.readFileSync(path.join(EXAMPLES, 'elva.json')), 'application/json');
    expect(status).toBe(200);
    expect(report.rows).toMatchObject({ total: 2, accepted: 2, rejected: 0 });
    const adult = await planOf('34706301000');
    const [sr] = await activitySrs(adult.plan);
    expect(sr.code!.coding![0].code).toBe('personal-assistant');
    expect(sr.performer![0].display).toBe('Elva Abistajad OÜ');
    expect(adult.team.participant!.map((p) => p.role![0].coding![0].code)).toEqual(expect.arrayContaining(['case-manager', '133932002', 'municipality-of-residence']));

    const child = await planOf('51204051004');
    const members = child.team.participant!.map((p) => `${p.role![0].coding![0].code}:${p.member!.display ?? ''}`);
    expect(members).toEqual(
      expect.arrayContaining(['school:Elva Gümnaasium', 'special-needs-coordinator:Evelin Org', 'support-person:Kalev Kask', 'child-protection-specialist:Kadri Lepik']),
    );
    const coord = child.team.participant!.find((p) => p.member!.display === 'Evelin Org')!;
    expect(coord.onBehalfOf!.reference).toMatch(/^Organization\//);
    // the plan's contributor is the municipality
    expect(child.plan.contributor!.map((c) => c.reference)).toContain('Organization/ehak-0171');
  });

  test('re-posting the same file adds nothing: no new versions, no new Provenance', async () => {
    const { plan } = await planOf('44501231007');
    const provBefore = await search<Provenance>(`Provenance?_count=1000`);
    const { status, report } = await post('tartu-linn', fs.readFileSync(path.join(EXAMPLES, 'tartu-linn.csv')));
    expect(status).toBe(200);
    expect(report.rows).toEqual({ total: 4, accepted: 4, rejected: 0, changed: 0 });
    const after = await planOf('44501231007');
    expect(after.plan.meta!.versionId).toBe(plan.meta!.versionId);
    expect(await search<Provenance>(`Provenance?_count=1000`)).toHaveLength(provBefore.length);
  });

  test('a changed row makes a new version whose Provenance names the file and the row', async () => {
    const csv = [HEADER, good(1), good(2, { 'Otsuse nr': 'CHG-1', Isikukood: '43911221003', Maht: '3' })].join('\n');
    expect((await post('tartu-linn', csv)).report.rows.accepted).toBe(2);
    const changed = [HEADER, good(1), good(2, { 'Otsuse nr': 'CHG-1', Isikukood: '43911221003', Maht: '6' })].join('\n');
    const res = await fetch(`${url}/social-care/tartu-linn`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: changed });
    const inboxId = res.headers.get('x-inbox-id')!;
    expect(((await res.json()) as ImportReport).rows.changed).toBe(1);
    const sr = (await search<ServiceRequest>(`ServiceRequest?identifier=https://care-gateway.ee/fhir/sid/social-decision/0793|CHG-1`))[0];
    expect(sr.meta!.versionId).toBe('2');
    expect(sr.quantityQuantity!.value).toBe(6);
    const prov = await search<Provenance>(`Provenance?target=ServiceRequest/${sr.id}`);
    const latest = prov.find((p) => p.target!.some((t) => t.reference === `ServiceRequest/${sr.id}/_history/2`))!;
    expect(latest.entity![0].what!.identifier!.value).toBe(inboxId);
    expect(latest.entity![0].what!.display).toContain('row 2');
  });

  test('a row the store refuses (a finished service cannot become active again) is rejected alone within its batch', async () => {
    const ended = [HEADER, good(1, { 'Otsuse nr': 'FIN-1', Isikukood: '46003170009', Algus: '01.01.2025', Lõpp: '31.03.2025' })].join('\n');
    expect((await post('tartu-linn', ended)).report.rows).toMatchObject({ accepted: 1, rejected: 0 });
    const sr = (await search<ServiceRequest>(`ServiceRequest?identifier=https://care-gateway.ee/fhir/sid/social-decision/0793|FIN-1`))[0];
    expect(sr.status).toBe('completed');
    // the same decision again without an end date (active), between two good rows of other people
    const csv = [
      HEADER,
      good(1, { 'Otsuse nr': 'FIN-2', Isikukood: '35811300009' }),
      good(2, { 'Otsuse nr': 'FIN-1', Isikukood: '46003170009', Algus: '01.01.2025' }),
      good(3, { 'Otsuse nr': 'FIN-3', Isikukood: '36207110014' }),
    ].join('\n');
    const { status, report } = await post('tartu-linn', csv);
    expect(status).toBe(200);
    expect(report.rows).toMatchObject({ total: 3, accepted: 2, rejected: 1 });
    expect(report.rejected).toEqual([expect.objectContaining({ row: 2, field: 'row', reason: expect.stringMatching(/status cannot change from "completed" to "active"/) })]);
    for (const ik of ['35811300009', '36207110014']) await planOf(ik); // one plan each
    const again = (await search<ServiceRequest>(`ServiceRequest?identifier=https://care-gateway.ee/fhir/sid/social-decision/0793|FIN-1`))[0];
    expect(again).toMatchObject({ status: 'completed', meta: { versionId: sr.meta!.versionId } });
  });

  test('every rejection rule names row, field and reason; the good rows are still imported', async () => {
    const rows = [
      good(10, { 'Otsuse nr': 'OK-1' }),
      good(11, { Isikukood: '35602281008' }), // check digit
      good(12, { Isikukood: '35613281007' }), // month 13
      good(13, { Isikukood: '3560228100' }), // length
      good(14, { Algus: '31.02.2026' }), // not a date
      good(15, { Algus: '2026/12/01' }), // wrong format
      good(16, { Algus: '10.12.2026', Lõpp: '01.12.2026' }), // end before start
      good(17, { Teenus: 'Lumelükkamine' }), // unknown service
      good(18, { 'Otsuse nr': '' }), // required
      good(19, { Maht: 'neli' }), // number
      good(20, { Ühik: 'liitrit' }), // unknown unit
      good(21, { 'Otsuse nr': 'OK-2', Isikukood: '44501231007' }),
    ];
    const { status, report } = await post('tartu-linn', [HEADER, ...rows].join('\r\n'));
    expect(status).toBe(200);
    expect(report.rows).toMatchObject({ total: 12, accepted: 2, rejected: 10 });
    const byRow = new Map(report.rejected.map((e) => [e.row, e]));
    const expectations: [number, string, RegExp][] = [
      [2, 'isikukood', /check digit/],
      [3, 'isikukood', /birth date/],
      [4, 'isikukood', /11 digits/],
      [5, 'start', /not a date/],
      [6, 'start', /not a date/],
      [7, 'end', /before it starts/],
      [8, 'service', /unknown value "Lumelükkamine"/],
      [9, 'decisionId', /required/],
      [10, 'amount', /not a number/],
      [11, 'unit', /unknown value "liitrit"/],
    ];
    for (const [row, field, reason] of expectations) {
      expect(byRow.get(row)).toMatchObject({ row, field });
      expect(byRow.get(row)!.reason).toMatch(reason);
      expect(byRow.get(row)!.at).toBe(`line ${row + 1}`);
    }
    // nothing of a rejected row was written; the report never echoes the isikukood
    expect(await search(`Patient?identifier=${NI}|35602281008`)).toHaveLength(0);
    expect(JSON.stringify(report.rejected)).not.toContain('35602281008');
    expect(await search(`ServiceRequest?identifier=https://care-gateway.ee/fhir/sid/social-decision/0793|OK-2`)).toHaveLength(1);
    // the file and its report are kept in the inbox: the rejected rows can be fixed and re-posted
    const entry = (await (await fetch(`${url}/admin/messages/${report.inboxId}`)).json()) as { status: string; outcome: ImportReport; payload?: string };
    expect(entry.status).toBe('processed');
    expect(entry.outcome.rows.rejected).toBe(10);
  });

  test('a file where every row is bad is 422; a file the mapping cannot read is 400; unknown source 404; nothing lost', async () => {
    const bad = await post('tartu-linn', [HEADER, good(1, { Isikukood: '1' })].join('\n'));
    expect(bad.status).toBe(422);
    expect(bad.report.status).toBe('rejected');

    const wrongDelimiter = await post('tartu-linn', HEADER.replace(/;/g, ',') + '\n1,2,3\n');
    expect(wrongDelimiter.status).toBe(400);
    expect(wrongDelimiter.report.error).toMatch(/lacks the column.*delimiter/);
    const entry = (await (await fetch(`${url}/admin/messages/${wrongDelimiter.report.inboxId}`)).json()) as { status: string };
    expect(entry.status).toBe('rejected');

    const unknown = await fetch(`${url}/social-care/no-such-town`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'a;b\n' });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as OperationOutcome).issue[0].diagnostics).toMatch(/no mapping/);
    const wrongType = await fetch(`${url}/social-care/elva`, { method: 'POST', headers: { 'Content-Type': 'text/csv' }, body: 'a;b\n' });
    expect(wrongType.status).toBe(400);
    expect(((await wrongType.json()) as OperationOutcome).issue[0].expression).toEqual(['Content-Type']);
  });

  test('CSV quirks: a quoted field with the delimiter, a line break and doubled quotes; CR-only line ends', async () => {
    const note = 'Mitu rida:\nesimene; teine "jutumärkides"';
    const csv = [HEADER, good(30, { 'Otsuse nr': 'Q-1', Märkus: note }), good(31, { 'Otsuse nr': 'Q-2', Isikukood: '44501231007' })].join('\r');
    const { report } = await post('tartu-linn', csv);
    expect(report.rows).toMatchObject({ total: 2, accepted: 2 });
    const sr = (await search<ServiceRequest>(`ServiceRequest?identifier=https://care-gateway.ee/fhir/sid/social-decision/0793|Q-1`))[0];
    expect(sr.note![0].text).toBe(note);
  });

  test('a third municipality is onboarded with only a new mapping file: windows-1257, comma-separated, ISO dates', async () => {
    fs.writeFileSync(
      path.join(extraMappings, 'kambja.yaml'),
      [
        'municipality: { ehak: "0283" }',
        'format: csv',
        'encoding: windows-1257',
        'delimiter: ","',
        'dateFormats: [yyyy-mm-dd]',
        'fields:',
        '  decisionId: ID',
        '  isikukood: Isikukood',
        '  service: Teenus',
        '  start: Alates',
        '  end: Kuni',
        '  caseWorker.name: Töötaja',
        '  caseWorker.role: { value: case-manager }',
        'maps:',
        '  services: { "päevakeskus": day-care, "nõustamine": social-counselling }',
      ].join('\n'),
    );
    const text = 'ID,Isikukood,Teenus,Alates,Kuni,Töötaja\r\nK-1,35602281007,Päevakeskus,2026-12-01,2027-12-01,Õnne Šõtšenko\r\n';
    const bytes = iconv.encode(text, 'windows-1257');
    expect(bytes.includes(Buffer.from('Õnne', 'utf8'))).toBe(false); // really single-byte encoded
    const { status, report } = await post('kambja', bytes);
    expect(status).toBe(200);
    expect(report.rows.accepted).toBe(1);
    const team = (await search<CareTeam>(`CareTeam?patient.identifier=${NI}|35602281007`))[0];
    expect(team.participant!.map((p) => p.member!.display)).toContain('Õnne Šõtšenko');
    const worker = team.participant!.find((p) => p.member!.display === 'Õnne Šõtšenko')!;
    expect(worker.role![0].coding![0].code).toBe('case-manager');
    expect(worker.onBehalfOf!.reference).toBe('Organization/ehak-0283');

    // the same bytes read as UTF-8 (a mapping that does not declare the encoding) are refused, not mangled:
    // per row when only the data has the letters, for the whole file when the header has them
    const utf8 = fs.readFileSync(path.join(extraMappings, 'kambja.yaml'), 'utf8').replace('encoding: windows-1257', 'encoding: utf-8');
    fs.writeFileSync(path.join(extraMappings, 'kambja-utf8.yaml'), utf8.replace('caseWorker.name: Töötaja', 'caseWorker.name: Tootaja'));
    const mangled = await post('kambja-utf8', iconv.encode(text.replace('Töötaja', 'Tootaja'), 'windows-1257'));
    expect(mangled.status).toBe(422);
    expect(mangled.report.rejected[0]).toMatchObject({ row: 1, field: 'service' });
    expect(mangled.report.rejected.map((r) => r.reason).join(' ')).toMatch(/not readable as utf-8/);
    fs.writeFileSync(path.join(extraMappings, 'kambja-utf8.yaml'), utf8);
    const header = await post('kambja-utf8', bytes);
    expect(header.status).toBe(400);
    expect(header.report.error).toMatch(/header row is not readable as utf-8/);
  });
});
