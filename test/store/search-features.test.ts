/**
 * Search beyond single parameters, on every backend: chained and reverse-chained parameters, _include and
 * _revinclude (with :iterate), _sort with multiple keys and stable cursors, and the access hook.
 *
 * @see https://hl7.org/fhir/R4/search.html#chaining, #has, #include, #revinclude, #sort
 */
import type { CarePlan, CareTeam, Organization, Patient, Provenance, Resource } from '@medplum/fhirtypes';
import type { Store } from '../../src/store/index.js';
import { backends, useStore } from '../helpers/backends.js';
import { buildSearch } from '../../src/store/search.js';
import { storedText } from '../../src/store/stored.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';
const BR = 'https://fhir.ee/sid/org/est/br';

describe.each(backends())('search features on %s', (_name, makeBackend) => {
  const suite = useStore(makeBackend);
  let store: Store;

  const seed: Resource[] = [
    { resourceType: 'Organization', id: 'elva', identifier: [{ system: BR, value: '75008427' }], name: 'Elva Vallavalitsus' } as Organization,
    { resourceType: 'Organization', id: 'tartu', identifier: [{ system: BR, value: '75006546' }], name: 'Tartu Linnavalitsus' } as Organization,
    ...(['37302102711', '36805280109', '38001010015'].map((ik, i) => ({
      resourceType: 'Patient',
      id: `sp-${i}`,
      identifier: [{ system: NI, value: ik }],
      name: [{ family: ['Tamm', 'Kask', 'Õunapuu'][i], given: ['Jüri'] }],
      birthDate: ['1973-02-10', '1968-05-28', '1980-01-01'][i],
    })) as Patient[]),
    ...([0, 1, 2].map((i) => ({
      resourceType: 'CareTeam',
      id: `st-${i}`,
      status: i === 2 ? 'inactive' : 'active',
      subject: { reference: `Patient/sp-${i}` },
      participant: [{ member: { reference: i === 1 ? 'Organization/tartu' : 'Organization/elva' } }],
    })) as CareTeam[]),
    ...([0, 1, 2].map((i) => ({
      resourceType: 'CarePlan',
      id: `sc-${i}`,
      status: 'active',
      intent: 'plan',
      subject: { reference: `Patient/sp-${i}` },
      careTeam: [{ reference: `CareTeam/st-${i}` }],
      period: { start: ['2026-01-05', '2026-03-01', '2026-02-10'][i] },
    })) as CarePlan[]),
    {
      resourceType: 'Provenance',
      id: 'sprov-0',
      target: [{ reference: 'CarePlan/sc-0/_history/1' }],
      recorded: '2026-01-05T10:00:00Z',
      agent: [{ who: { reference: 'Organization/elva' } }],
    } as Provenance,
  ];

  beforeAll(async () => {
    store = suite.store;
    for (const r of seed) await store.repo.update(r);
  });

  const search = (type: string, params: [string, string][], extra: { count?: number; cursor?: string } = {}) =>
    store.repo.search({ resourceType: type, params, count: extra.count ?? 50, cursor: extra.cursor });
  const ids = (rs: Resource[]) => rs.map((r) => `${r.resourceType}/${r.id}`);
  /** every id a search returns, page by page through its cursors (no page longer than count) */
  const pageIds = async (type: string, params: [string, string][], count: number): Promise<string[]> => {
    const out: string[] = [];
    let cursor: string | undefined;
    do {
      const r = await search(type, params, { count, cursor });
      expect(r.resources.length).toBeLessThanOrEqual(count);
      out.push(...r.resources.map((x) => x.id!));
      cursor = r.nextCursor;
    } while (cursor);
    return out;
  };

  test('the GP pull: CarePlan by the patient’s isikukood, with its CareTeam and Provenance in one call', async () => {
    const r = await search('CarePlan', [
      ['patient.identifier', `${NI}|37302102711`],
      ['_include', 'CarePlan:care-team'],
      ['_revinclude', 'Provenance:target'],
    ]);
    expect(ids(r.resources)).toEqual(['CarePlan/sc-0']);
    expect(ids(r.included).sort()).toEqual(['CareTeam/st-0', 'Provenance/sprov-0']);
  });

  test('the municipality query: CareTeams by participant organisation identifier (typed chain) and status', async () => {
    const r = await search('CareTeam', [
      ['participant:Organization.identifier', `${BR}|75008427`],
      ['status', 'active'],
    ]);
    expect(ids(r.resources)).toEqual(['CareTeam/st-0']);
    const byRef = await search('CareTeam', [['participant', 'Organization/elva']]);
    expect(ids(byRef.resources)).toEqual(['CareTeam/st-0', 'CareTeam/st-2']);
  });

  test('a reference with :identifier matches by the referenced resource’s identifier', async () => {
    const r = await search('CarePlan', [['subject:identifier', `${NI}|36805280109`]]);
    expect(ids(r.resources)).toEqual(['CarePlan/sc-1']);
  });

  test('_has finds patients whose CareTeam includes an organisation', async () => {
    const r = await search('Patient', [['_has:CareTeam:patient:participant', 'Organization/tartu']]);
    expect(ids(r.resources)).toEqual(['Patient/sp-1']);
  });

  test(':iterate follows includes from included resources (plan → team → its participant organisation)', async () => {
    const r = await search('CarePlan', [
      ['_id', 'sc-1'],
      ['_include', 'CarePlan:care-team'],
      ['_include:iterate', 'CareTeam:participant'],
    ]);
    expect(ids(r.included)).toEqual(['CareTeam/st-1', 'Organization/tartu']);
  });

  test('_sort by several keys, descending too, and cursors that page through the sorted order', async () => {
    const desc = await search('CarePlan', [['_id', 'sc-0,sc-1,sc-2'], ['_sort', '-date']]);
    expect(ids(desc.resources)).toEqual(['CarePlan/sc-1', 'CarePlan/sc-2', 'CarePlan/sc-0']);
    const byFamily = await search('Patient', [['_id', 'sp-0,sp-1,sp-2'], ['_sort', 'family,-birthdate']]);
    // strings sort on their accent-folded form (Õunapuu as "ounapuu"), not in Estonian alphabetical order
    expect(byFamily.resources.map((p) => (p as Patient).name?.[0].family)).toEqual(['Kask', 'Õunapuu', 'Tamm']);

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await search('CarePlan', [['_id', 'sc-0,sc-1,sc-2'], ['_sort', '-date']], { count: 1, cursor });
      seen.push(...ids(page.resources));
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen).toEqual(['CarePlan/sc-1', 'CarePlan/sc-2', 'CarePlan/sc-0']);
  });

  test('a cursor from another search is refused', async () => {
    const page = await search('CarePlan', [['_sort', '-date']], { count: 1 });
    await expect(search('CarePlan', [], { count: 1, cursor: page.nextCursor })).rejects.toThrow(/cursor/);
    await expect(search('CarePlan', [], { count: 1, cursor: 'not-a-cursor' })).rejects.toThrow(/cursor/);
  });

  test('the access hook sees every result, included ones too', async () => {
    const r = await store.repo.search({
      resourceType: 'CarePlan',
      params: [['_id', 'sc-0'], ['_include', 'CarePlan:care-team'], ['_revinclude', 'Provenance:target']],
      access: async (rs) => rs.filter((res) => res.resourceType !== 'Provenance'),
    });
    expect(ids(r.included)).toEqual(['CareTeam/st-0']);
  });

  test('a page and its first round of includes read together: includes of the next page\'s first match stay out', async () => {
    // (_lastUpdated is not a broad condition: the ordinary page query, with the includes in the same statement)
    const r = await search('CarePlan', [['_lastUpdated', 'gt2000-01-01'], ['_include', 'CarePlan:care-team']], { count: 1 });
    expect(ids(r.resources)).toEqual(['CarePlan/sc-0']);
    expect(ids(r.included)).toEqual(['CareTeam/st-0']);
    const next = await search('CarePlan', [['_lastUpdated', 'gt2000-01-01'], ['_include', 'CarePlan:care-team']], { count: 1, cursor: r.nextCursor });
    expect(ids(next.resources)).toEqual(['CarePlan/sc-1']);
    expect(ids(next.included)).toEqual(['CareTeam/st-1']);
    // with an access decision that hides the match, nothing it reaches is included either
    const hidden = await store.repo.search({
      resourceType: 'CarePlan',
      params: [['_id', 'sc-0'], ['_include', 'CarePlan:care-team'], ['_include', 'CarePlan:subject']],
      access: async (rs) => rs.filter((x) => x.resourceType !== 'CarePlan'),
    });
    expect(hidden.resources).toEqual([]);
    expect(hidden.included).toEqual([]);
  });

  test('broad searches in creation order page the same whether a window holds the page or not', async () => {
    // 1,200 Practitioners: 30 active ones spread thinly (for pages of 50 a window holds fewer than a page, so the
    // ordinary query answers) and a dense inactive majority (a window holds each page)
    const active = new Set(Array.from({ length: 30 }, (_, i) => i * 40 + 7));
    const practitioners = Array.from({ length: 1200 }, (_, i) => ({
      resourceType: 'Practitioner' as const,
      id: `wp-${String(i).padStart(4, '0')}`,
      active: active.has(i),
      name: [{ family: `P${i}` }],
    }));
    await store.repo.transaction((w) => w.updateMany(practitioners));
    const pageAll = (params: [string, string][], count: number) => pageIds('Practitioner', params, count);
    const want = (on: boolean) => practitioners.filter((p) => p.active === on).map((p) => p.id);
    expect(await pageAll([['active', 'true']], 10)).toEqual(want(true)); // windows of 500 hold 11 matches or end the type
    expect(await pageAll([['active', 'true']], 50)).toEqual(want(true)); // the window of 510 holds 13 of 51: ordinary query
    expect(await pageAll([['active', 'true']], 29)).toEqual(want(true));
    expect(await pageAll([['active', 'false']], 100)).toEqual(want(false));
    expect(await pageAll([['active:not', 'true']], 250)).toEqual(want(false));
    // a page in the middle: exactly the next 100 after the cursor
    const first = await search('Practitioner', [['active', 'false']], { count: 100 });
    const second = await search('Practitioner', [['active', 'false']], { count: 100, cursor: first.nextCursor });
    expect(second.resources.map((x) => x.id)).toEqual(want(false).slice(100, 200));
  });
  test('a search anchored on one reference pages in creation order from the reference index, each resource once', async () => {
    // 30 teams of one municipality among others' teams; some inactive, one deleted, one naming the municipality twice
    const teams: CareTeam[] = Array.from({ length: 45 }, (_, i) => ({
      resourceType: 'CareTeam',
      id: `anchor-${String(i).padStart(2, '0')}`,
      status: i % 7 === 3 ? 'inactive' : 'active',
      participant: [
        { member: { reference: i % 3 === 2 ? 'Organization/tartu' : 'Organization/elva' } },
        ...(i === 4 ? [{ member: { reference: 'Organization/elva' } }] : []),
      ],
      note: [{ text: 'anchor test' }],
    }));
    // created in an order that is not the id order, so creation order is what is checked
    const order = [...teams].sort((a, b) => ((a.id!.charCodeAt(8) * 7 + a.id!.charCodeAt(7)) % 45) - ((b.id!.charCodeAt(8) * 7 + b.id!.charCodeAt(7)) % 45) || a.id!.localeCompare(b.id!));
    for (const t of order) await store.repo.update(t);
    await store.repo.delete('CareTeam', 'anchor-06');
    // an update keeps its place (seq), and its new index rows carry it
    await store.repo.update({ ...teams[1], note: [{ text: 'changed' }] });
    const elvaActive = order.filter((t) => t.id !== 'anchor-06' && t.status === 'active' && t.participant!.some((p) => p.member!.reference === 'Organization/elva')).map((t) => t.id);
    const pageAll = async (params: [string, string][], count: number) => (await pageIds('CareTeam', params, count)).filter((id) => id.startsWith('anchor-'));
    const want = elvaActive.filter((id) => id!.startsWith('anchor-'));
    // the walk is taken for one typed reference value without _sort, not for several values or a sort
    const built = (params: [string, string][]) => buildSearch({ resourceType: 'CareTeam', params, count: 4 }).sql;
    expect(built([['participant', 'Organization/elva'], ['status', 'active']])).toContain('WITH RECURSIVE walk');
    expect(built([['participant', 'Organization/elva,Organization/tartu']])).not.toContain('walk');
    expect(built([['participant', 'Organization/elva'], ['_sort', 'date']])).not.toContain('walk');
    expect(want.length).toBeGreaterThan(20);
    expect(await pageAll([['participant', 'Organization/elva'], ['status', 'active']], 4)).toEqual(want);
    expect(await pageAll([['status', 'active'], ['participant:Organization', 'elva']], 7)).toEqual(want);
    expect(await pageAll([['participant', 'Organization/elva'], ['status', 'active']], 100)).toEqual(want);
    // the anchor's own condition still counts in a total
    const counted = await store.repo.search({ resourceType: 'CareTeam', params: [['participant', 'Organization/elva'], ['status', 'active']], count: 1, total: 'accurate' });
    expect(counted.total).toBe(elvaActive.length + 1); // st-0 of the seed, too
  });
  test('textsOnly: matches come as stubs carrying their stored text, unless an access decision needs them parsed', async () => {
    const params: [string, string][] = [['participant', 'Organization/elva'], ['_include', 'CareTeam:subject']];
    const full = await store.repo.search({ resourceType: 'CareTeam', params, count: 50 });
    const texts = await store.repo.search({ resourceType: 'CareTeam', params, count: 50, textsOnly: true });
    expect(ids(texts.resources)).toEqual(ids(full.resources));
    expect(ids(texts.included)).toEqual(ids(full.included)); // includes are found from the stubs' type and id
    texts.resources.forEach((stub, i) => {
      expect(Object.keys(stub).sort()).toEqual(['id', 'resourceType']);
      expect(JSON.parse(storedText(stub)!)).toEqual(full.resources[i]);
    });
    const seen: string[] = [];
    const guarded = await store.repo.search({ resourceType: 'CareTeam', params, count: 50, textsOnly: true, access: async (rs) => (seen.push(...ids(rs)), rs) });
    expect(guarded.resources).toEqual(full.resources); // parsed for the access decision
    expect(seen).toEqual(expect.arrayContaining(ids(full.resources)));
  });
});
