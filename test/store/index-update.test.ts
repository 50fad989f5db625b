/**
 * Updates change only the index rows that differ from the stored ones (repository.ts `indexChange`), through a unit
 * of work (ingest) and through the repository (a FHIR PUT): the rows left in the tables must always be exactly those a fresh indexing of the current version
 * gives — after adding and removing values, changing dates and quantities, a change of compartment (every row
 * rewritten), a re-creation after a delete, and several versions in one unit.
 */
import type { CarePlan, Observation } from '@medplum/fhirtypes';
import type { Resource } from '../../src/fhir/types.js';
import type { Store } from '../../src/store/index.js';
import { indexRows } from '../../src/store/indexer.js';
import { inUnitOfWork } from '../../src/store/unit-of-work.js';
import { backends, useStore } from '../helpers/backends.js';

type Row = Record<string, unknown>;

/** The rows stored for a resource, per table, as comparable text (ctid kept apart, to tell rewritten rows). */
async function storedRows(store: Store, type: string, id: string): Promise<{ rows: Record<string, string[]>; ctids: Map<string, string>; keys: Set<string> }> {
  const q = async (sql: string): Promise<Row[]> => store.db.query(sql, [type, id]);
  const where = 'WHERE resource_type = $1 AND resource_id = $2';
  const ts = (c: string): string => `CASE WHEN isfinite(${c}) THEN to_char(${c} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS') ELSE ${c}::text END`;
  const parts: Record<string, Row[]> = {
    token: await q(`SELECT ctid::text, param, system, code, patient_key FROM idx_token ${where}`),
    string: await q(`SELECT ctid::text, param, value, exact, patient_key FROM idx_string ${where}`),
    reference: await q(`SELECT ctid::text, param, target_type, target_id, patient_key FROM idx_reference ${where}`),
    date: await q(`SELECT ctid::text, param, ${ts('low')} AS low, ${ts('high')} AS high, patient_key FROM idx_date ${where}`),
    quantity: await q(`SELECT ctid::text, param, value::float8 AS value, system, code, patient_key FROM idx_quantity ${where}`),
  };
  const rows: Record<string, string[]> = {};
  const ctids = new Map<string, string>();
  const keys = new Set<string>();
  for (const [kind, list] of Object.entries(parts)) {
    rows[kind] = list
      .map(({ ctid, ...rest }) => {
        const k = `${kind}:${JSON.stringify(rest)}`;
        ctids.set(k, ctid as string);
        keys.add(k);
        return JSON.stringify(rest);
      })
      .sort();
  }
  return { rows, ctids, keys };
}

/** The rows a fresh indexing of the resource gives, in the same shape. */
function expectedRows(r: Resource): Record<string, string[]> {
  const x = indexRows(r);
  const pk = x.patientKey;
  const day = (s: string): string => (s === '-infinity' || s === 'infinity' ? s : new Date(s).toISOString().slice(0, 23));
  return {
    token: x.token.map((t) => JSON.stringify({ param: t.param, system: t.system ?? null, code: t.code ?? null, patient_key: pk })).sort(),
    string: x.string.map((t) => JSON.stringify({ param: t.param, value: t.value, exact: t.exact === t.value ? null : t.exact, patient_key: pk })).sort(),
    reference: x.reference.map((t) => JSON.stringify({ param: t.param, target_type: t.targetType, target_id: t.targetId, patient_key: pk })).sort(),
    date: x.date.map((t) => JSON.stringify({ param: t.param, low: day(t.low), high: day(t.high), patient_key: pk })).sort(),
    quantity: x.quantity.map((t) => JSON.stringify({ param: t.param, value: t.value, system: t.system ?? null, code: t.code ?? null, patient_key: pk })).sort(),
  };
}

const plan = (activities: string[], start: string, subject = 'Patient/p1'): CarePlan => ({
  resourceType: 'CarePlan',
  id: 'cp-diff',
  status: 'active',
  intent: 'plan',
  subject: { reference: subject },
  period: { start },
  activity: activities.map((a) => ({ reference: { reference: `ServiceRequest/${a}` } })),
});

const paths = (['a unit of work', 'the repository'] as const).flatMap((path) => backends().map(([name, make]) => [path, name, make] as const));

describe.each(paths)('index rows of an update through %s on %s', (path, _name, makeBackend) => {
  const suite = useStore(makeBackend);
  const write = async (...rs: Resource[]): Promise<void> => {
    if (path === 'the repository') {
      // each its own transaction, as a FHIR PUT is
      for (const r of rs) await suite.store.repo.update(r);
      return;
    }
    await inUnitOfWork(suite.store.repo, async (w) => {
      for (const r of rs) await w.updateMany([r]);
    });
  };
  const check = async (r: Resource): Promise<Awaited<ReturnType<typeof storedRows>>> => {
    const got = await storedRows(suite.store, r.resourceType, r.id!);
    expect(got.rows).toEqual(expectedRows(r));
    // and every row is found by its resource's seq (what updates, deletes and searches go by)
    for (const t of ['idx_token', 'idx_string', 'idx_reference', 'idx_date', 'idx_quantity']) {
      const wrong = await suite.store.db.query(
        `SELECT 1 FROM ${t} x JOIN resource o ON o.resource_type = x.resource_type AND o.id = x.resource_id WHERE x.resource_seq IS DISTINCT FROM o.seq`,
      );
      expect(wrong).toEqual([]);
    }
    return got;
  };

  test('one activity more: only its row is written, the others stay where they are', async () => {
    await write(plan(['a', 'b', 'c'], '2026-11-01'));
    const before = await check(plan(['a', 'b', 'c'], '2026-11-01'));
    await write(plan(['a', 'b', 'c', 'd'], '2026-11-01'));
    const after = await check(plan(['a', 'b', 'c', 'd'], '2026-11-01'));
    // every row that was there is untouched (same physical row), only the new activity's row is new
    const kept = [...before.keys].filter((k) => after.ctids.get(k) === before.ctids.get(k));
    expect(kept.length).toBe(before.keys.size);
    expect([...after.keys].filter((k) => !before.keys.has(k))).toEqual([
      expect.stringContaining('"target_id":"d"'),
    ]);
  });

  test('values removed and changed (activity, date) leave exactly the fresh index', async () => {
    await write(plan(['a', 'c', 'e'], '2026-12-15T10:30:00+02:00'));
    await check(plan(['a', 'c', 'e'], '2026-12-15T10:30:00+02:00'));
  });

  test('another compartment (subject): every row rewritten with the new patient key', async () => {
    await write(plan(['a', 'c', 'e'], '2026-12-15', 'Patient/p2'));
    const got = await check(plan(['a', 'c', 'e'], '2026-12-15', 'Patient/p2'));
    expect(Object.values(got.rows).flat().every((r) => JSON.parse(r).patient_key === 'p2')).toBe(true);
  });

  test('several versions (in one unit where there is one), then deleted and written again', async () => {
    const obs = (value: number, code: string): Observation => ({
      resourceType: 'Observation',
      id: 'obs-diff',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code }] },
      subject: { reference: 'Patient/p1' },
      effectiveDateTime: '2026-11-02T08:00:00Z',
      valueQuantity: { value, unit: 'mmol/L', system: 'http://unitsofmeasure.org', code: 'mmol/L' },
    });
    await write(obs(5.5, '15074-8'));
    await write(obs(6.1, '15074-8'), obs(7.2, '2345-7'), obs(7.3, '2345-7'));
    await check(obs(7.3, '2345-7'));
    await suite.store.repo.delete('Observation', 'obs-diff');
    expect((await storedRows(suite.store, 'Observation', 'obs-diff')).keys.size).toBe(0);
    await write(obs(4.9, '15074-8'));
    await check(obs(4.9, '15074-8'));
    // and found by search as it is now
    const found = await suite.store.repo.search({ resourceType: 'Observation', params: [['code', 'http://loinc.org|15074-8'], ['value-quantity', 'lt5']] });
    expect(found.resources.map((r) => r.id)).toEqual(['obs-diff']);
  });
});
