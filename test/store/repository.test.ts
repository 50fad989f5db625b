/**
 * Repository conformance: one suite, every backend (PGlite and PostgreSQL).
 *
 * Specifications covered:
 * - https://hl7.org/fhir/R4/http.html#create, #read, #vread, #update, #delete, #history, #ccreate
 * - https://hl7.org/fhir/R4/search.html (token, reference, date, string, _id, _lastUpdated, paging)
 */
import type { Patient, Observation, Resource } from '@medplum/fhirtypes';
import { OutcomeError } from '../../src/fhir/outcome.js';
import type { Store } from '../../src/store/index.js';
import { migrate } from '../../src/store/schema.js';
import { backends, useStore } from '../helpers/backends.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';

function patient(isikukood: string, family = 'Tamm', given = 'Jüri'): Patient {
  return {
    resourceType: 'Patient',
    identifier: [{ system: NI, value: isikukood }],
    name: [{ family, given: [given] }],
    gender: 'male',
    birthDate: '1973-02-10',
  };
}

async function expectOutcome(p: Promise<unknown>, category: string): Promise<OutcomeError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(OutcomeError);
    expect((err as OutcomeError).category).toBe(category);
    return err as OutcomeError;
  }
  throw new Error(`expected an OutcomeError of category ${category}, but the call succeeded`);
}

describe.each(backends())('repository on %s', (_name, makeBackend) => {
  const suite = useStore(makeBackend);
  let store: Store;
  beforeAll(() => ({ store } = suite));

  test('create assigns an id, versionId 1 and lastUpdated, and read returns the same resource', async () => {
    const { resource, outcome } = await store.repo.create(patient('37302102711'));
    expect(outcome).toBe('created');
    expect(resource.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(resource.meta?.versionId).toBe('1');
    expect(Date.parse(resource.meta!.lastUpdated!)).toBeGreaterThan(Date.now() - 60_000);
    const read = await store.repo.read<Patient>('Patient', resource.id!);
    expect(read).toEqual(resource);
  });

  test('read of a missing resource is not-found', async () => {
    await expectOutcome(store.repo.read('Patient', 'does-not-exist'), 'not-found');
  });

  test('update makes a new version; vread and history keep every version', async () => {
    const { resource: v1 } = await store.repo.create(patient('36805280109', 'Kask', 'Mari'));
    const { resource: v2, outcome } = await store.repo.update({ ...v1, name: [{ family: 'Kask-Õunapuu', given: ['Mari'] }] });
    expect(outcome).toBe('updated');
    expect(v2.meta?.versionId).toBe('2');
    expect((await store.repo.vread<Patient>('Patient', v1.id!, '1')).name?.[0].family).toBe('Kask');
    expect((await store.repo.read<Patient>('Patient', v1.id!)).name?.[0].family).toBe('Kask-Õunapuu');
    const history = await store.repo.history({ resourceType: 'Patient', id: v1.id });
    expect(history.map((h) => h.versionId)).toEqual(['2', '1']);
    expect(history.map((h) => h.method)).toEqual(['PUT', 'POST']);
  });

  test('an update with identical content makes no new version', async () => {
    const { resource: v1 } = await store.repo.create(patient('38001010015'));
    const again = await store.repo.update({ ...v1 });
    expect(again.outcome).toBe('unchanged');
    expect(again.resource.meta?.versionId).toBe('1');
  });

  test('If-Match with a stale version is refused as a precondition failure and writes nothing', async () => {
    const { resource: v1 } = await store.repo.create(patient('37302100490'));
    await store.repo.update({ ...v1, gender: 'other' }, { ifMatch: '1' });
    await expectOutcome(store.repo.update({ ...v1, gender: 'unknown' }, { ifMatch: '1' }), 'precondition');
    expect((await store.repo.read<Patient>('Patient', v1.id!)).gender).toBe('other');
  });

  test('update with a new id creates the resource (update as create)', async () => {
    const r = await store.repo.update({ ...patient('37302102711'), id: 'pat-upsert-1' });
    expect(r.outcome).toBe('created');
    expect(r.resource.meta?.versionId).toBe('1');
  });

  test('delete leaves a deletion in history; read says gone', async () => {
    const { resource } = await store.repo.create(patient('36805280109'));
    await store.repo.delete('Patient', resource.id!);
    await expectOutcome(store.repo.read('Patient', resource.id!), 'gone');
    const h = await store.repo.history({ resourceType: 'Patient', id: resource.id });
    expect(h[0]).toMatchObject({ deleted: true, method: 'DELETE', versionId: '2' });
  });

  test('an invalid resource is refused with the FHIRPath of the problem and nothing is stored', async () => {
    const bad = { ...patient('37302102711'), birthDate: 19730210, foo: 1 } as unknown as Patient;
    const err = await expectOutcome(store.repo.create(bad), 'invalid');
    const where = err.outcome.issue.flatMap((i) => i.expression ?? []);
    expect(where).toEqual(expect.arrayContaining(['Patient.birthDate', 'Patient.foo']));
  });

  test('conditional create returns the existing match instead of creating a second', async () => {
    const crit = `identifier=${NI}|37302102711&family=Kivi`;
    const a = await store.repo.create(patient('37302102711', 'Kivi'), { ifNoneExist: crit });
    const b = await store.repo.create(patient('37302102711', 'Kivi'), { ifNoneExist: crit });
    expect(a.outcome).toBe('created');
    expect(b.outcome).toBe('existing');
    expect(b.resource.id).toBe(a.resource.id);
  });

  test('concurrent conditional creates with the same criteria create exactly one resource', async () => {
    const crit = `identifier=${NI}|38001010015&family=Saar`;
    const results = await Promise.all(Array.from({ length: 12 }, () => store.repo.create(patient('38001010015', 'Saar'), { ifNoneExist: crit })));
    expect(new Set(results.map((r) => r.resource.id)).size).toBe(1);
    expect(results.filter((r) => r.outcome === 'created')).toHaveLength(1);
    const found = await store.repo.search({ resourceType: 'Patient', params: [['family', 'saar']] });
    expect(found.resources).toHaveLength(1);
  });

  test('conditional create matching several resources is a precondition failure', async () => {
    await store.repo.create(patient('36805280109', 'Mets'));
    await store.repo.create(patient('36805280109', 'Mets'));
    await expectOutcome(store.repo.create(patient('36805280109', 'Mets'), { ifNoneExist: 'family=Mets' }), 'precondition');
  });

  test('search by token (system|value), by string, by _id and by reference', async () => {
    const { resource: p } = await store.repo.create(patient('37302102711', 'Õunapuu', 'Tõnu'));
    const obs: Observation = {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
      subject: { reference: `Patient/${p.id}` },
      effectiveDateTime: '2026-03-05T10:00:00+02:00',
      valueQuantity: { value: 72, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    };
    const { resource: o } = await store.repo.create(obs);
    const ids = async (type: string, params: [string, string][]): Promise<string[]> =>
      (await store.repo.search({ resourceType: type, params, count: 100 })).resources.map((r: Resource) => r.id!);

    expect(await ids('Patient', [['family', 'ounapuu']])).toEqual([p.id]); // accent- and case-insensitive
    expect(await ids('Patient', [['family:exact', 'Õunapuu']])).toEqual([p.id]);
    expect(await ids('Patient', [['_id', p.id!]])).toEqual([p.id]);
    expect(await ids('Observation', [['subject', `Patient/${p.id}`]])).toEqual([o.id]);
    expect(await ids('Observation', [['patient', p.id!]])).toEqual([o.id]);
    expect(await ids('Observation', [['code', 'http://loinc.org|8867-4'], ['patient', p.id!]])).toEqual([o.id]);
    expect(await ids('Observation', [['code', 'http://snomed.info/sct|8867-4'], ['patient', p.id!]])).toEqual([]);
    expect(await ids('Observation', [['code:not', 'http://loinc.org|8867-4'], ['patient', p.id!]])).toEqual([]);
    expect(await ids('Observation', [['date', '2026-03'], ['patient', p.id!]])).toEqual([o.id]);
    expect(await ids('Observation', [['date', 'gt2026-03-06'], ['patient', p.id!]])).toEqual([]);
    expect(await ids('Observation', [['value-quantity', 'gt70'], ['patient', p.id!]])).toEqual([o.id]);
    expect(await ids('Observation', [['value-quantity', 'lt70'], ['patient', p.id!]])).toEqual([]);
    expect(await ids('Patient', [['_lastUpdated', `ge${new Date(Date.now() - 60_000).toISOString()}`], ['_id', p.id!]])).toEqual([p.id]);
    expect(await ids('Patient', [['_lastUpdated', `lt2000-01-01`], ['_id', p.id!]])).toEqual([]);
  });

  test('unknown parameters: a warning in lenient mode, an error in strict mode', async () => {
    const lenient = await store.repo.search({ resourceType: 'Patient', params: [['shoe-size', '44']], count: 1 });
    expect(lenient.issues[0]).toMatchObject({ severity: 'warning', expression: ['shoe-size'] });
    await expectOutcome(store.repo.search({ resourceType: 'Patient', params: [['shoe-size', '44']], strict: true }), 'invalid');
  });

  test('search values reach SQL only as parameters', async () => {
    const evil = `x' OR 1=1; DROP TABLE resource; --`;
    const r = await store.repo.search({ resourceType: 'Patient', params: [['family', evil], ['identifier', evil]] });
    expect(r.resources).toEqual([]);
    expect((await store.repo.search({ resourceType: 'Patient', params: [], count: 1 })).resources).toHaveLength(1);
  });

  test('paging by cursor visits every match once, even with writes between pages', async () => {
    const tag = `page-${Date.now()}`;
    const created: string[] = [];
    for (let i = 0; i < 25; i++) {
      const p = { ...patient('37302102711', `Paging${i}`), identifier: [{ system: 'urn:test:paging', value: tag }] };
      created.push((await store.repo.create(p)).resource.id!);
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await store.repo.search({ resourceType: 'Patient', params: [['identifier', `urn:test:paging|${tag}`]], count: 10, cursor });
      seen.push(...page.resources.map((r) => r.id!));
      cursor = page.nextCursor;
      pages++;
      if (pages === 1) {
        // a write between pages: an update to a seen one and a brand-new match
        await store.repo.update({ ...(await store.repo.read<Patient>('Patient', created[0])), gender: 'female' });
        const late = { ...patient('37302102711', 'Late'), identifier: [{ system: 'urn:test:paging', value: tag }] };
        created.push((await store.repo.create(late)).resource.id!);
      }
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual(created);
    expect(new Set(seen).size).toBe(seen.length);
  });

  test('total=accurate counts every match', async () => {
    const r = await store.repo.search({ resourceType: 'Patient', params: [['family', 'paging']], count: 5, total: 'accurate' });
    expect(r.total).toBe(25);
    expect(r.resources).toHaveLength(5);
  });

  test('writes of one transaction commit together or not at all', async () => {
    const tag = `tx-${Date.now()}`;
    await expect(
      store.repo.transaction(async (w) => {
        await w.create({ ...patient('37302102711', 'Rollback'), identifier: [{ system: 'urn:test:tx', value: tag }] });
        await w.create({ ...patient('37302102711', 'Rollback'), identifier: [{ system: 'urn:test:tx', value: tag }] });
        throw new OutcomeError('invalid', 'the last entry is bad');
      }),
    ).rejects.toThrow('the last entry is bad');
    const r = await store.repo.search({ resourceType: 'Patient', params: [['identifier', `urn:test:tx|${tag}`]] });
    expect(r.resources).toEqual([]);
  });

  test('running migrations again on an existing store applies nothing', async () => {
    expect(await migrate(store.db)).toEqual([]);
  });
});
