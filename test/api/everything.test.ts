/**
 * Patient/$everything and _history paging over HTTP on every backend: the compartment of one person and nobody
 * else's, `_type`, `_since`, cursor pages to the end; history pages that neither skip nor repeat versions written
 * in one batch with one timestamp.
 */
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';

describe.each(backends())('$everything and _history on %s', (_name, makeBackend) => {
  const suite = useGateway(makeBackend);
  let base: string;
  let url: string;
  beforeAll(async () => {
    ({ base, url } = suite);
    for (const [ik, id] of [['37302102711', 'E-1'], ['44501231007', 'E-2']]) {
      const ack = await (await fetch(`${url}/hl7v2`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: eeDischarge({ controlId: id, isikukood: ik, visit: `V-${id}` }) })).text();
      expect(ack).toContain('MSA|AA');
    }
  });

  const get = async (u: string): Promise<Bundle> => (await (await fetch(u)).json()) as Bundle;
  const pages = async (first: string): Promise<Resource[]> => {
    const out: Resource[] = [];
    let next: string | undefined = first;
    while (next) {
      const b = await get(next);
      out.push(...(b.entry ?? []).map((e) => e.resource!));
      next = b.link?.find((l) => l.relation === 'next')?.url;
    }
    return out;
  };
  const patientId = async (ik: string) => ((await get(`${base}/Patient?identifier=${NI}|${ik}`)).entry![0].resource!.id)!;

  test('the compartment of one person, paged to the end, and nothing of anyone else', async () => {
    const id = await patientId('37302102711');
    const other = await patientId('44501231007');
    const all = await pages(`${base}/Patient/${id}/$everything?_count=3`);
    const keys = all.map((r) => `${r.resourceType}/${r.id}`);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys).toContain(`Patient/${id}`);
    const types = new Set<string>(all.map((r) => r.resourceType));
    for (const t of ['CarePlan', 'CareTeam', 'Encounter', 'Condition', 'ServiceRequest', 'RelatedPerson', 'Provenance']) expect(types.has(t)).toBe(true);
    expect(JSON.stringify(all)).not.toContain(other);
    // in one page: the same set
    const one = await get(`${base}/Patient/${id}/$everything?_count=1000`);
    expect(one.entry!.map((e) => `${e.resource!.resourceType}/${e.resource!.id}`).sort()).toEqual([...keys].sort());

    const plans = await get(`${base}/Patient/${id}/$everything?_type=CarePlan,CareTeam`);
    expect([...new Set(plans.entry!.map((e) => e.resource!.resourceType))].sort()).toEqual(['CarePlan', 'CareTeam']);
    expect((await get(`${base}/Patient/${id}/$everything?_since=2999-01-01T00:00:00Z`)).entry).toEqual([]);
    expect((await fetch(`${base}/Patient/nobody/$everything`)).status).toBe(404);
    expect((await fetch(`${base}/Patient/${id}/$everything?_type=Nonsense`)).status).toBe(400);
  });

  test('_history pages with a cursor: versions written in one batch are neither skipped nor repeated', async () => {
    const everything = await pages(`${base}/_history?_count=1000`);
    const paged = await pages(`${base}/_history?_count=4`);
    const key = (r: Resource) => `${r.resourceType}/${r.id}/${r.meta?.versionId}`;
    expect(paged.map(key)).toEqual(everything.map(key));
    expect(new Set(paged.map(key)).size).toBe(paged.length);
    // one discharge writes its resources in batches sharing one timestamp
    const stamps = new Map<string, number>();
    for (const r of everything) stamps.set(r.meta!.lastUpdated!, (stamps.get(r.meta!.lastUpdated!) ?? 0) + 1);
    expect(Math.max(...stamps.values())).toBeGreaterThan(4);
    expect((await fetch(`${base}/_history?_cursor=garbage`)).status).toBe(400);
  });
});
