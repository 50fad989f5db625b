/**
 * The unit of work (src/store/unit-of-work.ts) on every backend: reads ahead, buffers writes, flushes them as one
 * batch with every version kept, undoes a mark, and refuses (then reruns) work whose reads another writer changed.
 */
import type { Patient } from '@medplum/fhirtypes';
import { OutcomeError } from '../../src/fhir/outcome.js';
import type { Store } from '../../src/store/index.js';
import { inUnitOfWork, UnitOfWork } from '../../src/store/unit-of-work.js';
import { backends, useStore } from '../helpers/backends.js';

const NI = 'https://fhir.ee/sid/pid/est/ni';

const person = (id: string, family: string): Patient => ({
  resourceType: 'Patient',
  id,
  identifier: [{ system: NI, value: '37302102711' }],
  name: [{ family, given: ['Jüri'] }],
  gender: 'male',
});

describe.each(backends())('unit of work on %s', (name, makeBackend) => {
  // the embedded store has one connection: a second writer during a transaction would wait for it forever
  const concurrent = name === 'postgres' ? test : test.skip;
  const suite = useStore(makeBackend);
  let store: Store;
  beforeAll(() => ({ store } = suite));

  const versions = async (type: string, id: string): Promise<string[]> =>
    (await store.repo.history({ resourceType: type, id })).map((h) => h.versionId).sort();
  const absent = async (type: string, id: string): Promise<undefined> =>
    store.repo.read(type, id).then(
      () => {
        throw new Error(`${type}/${id} exists`);
      },
      (e: OutcomeError) => {
        expect(e.category).toBe('not-found');
        return undefined;
      },
    );
  const byFamily = async (family: string): Promise<string[]> =>
    (await store.repo.search({ resourceType: 'Patient', params: [['family:exact', family]] })).resources.map((r) => r.id!).sort();

  test('nothing reaches the database before flush; then every version is in the history and the index follows the last', async () => {
    let pendingBeforeFlush = -1;
    await inUnitOfWork(store.repo, async (w) => {
      await w.updateMany([person('uow-1', 'Kask')]);
      await w.updateMany([person('uow-1', 'Kuusk')]);
      const [third] = await w.updateMany([person('uow-1', 'Mänd')]);
      expect(third.resource.meta?.versionId).toBe('3');
      // reads inside the unit see its own writes
      expect((await w.read<Patient>('Patient', 'uow-1')).name?.[0].family).toBe('Mänd');
      pendingBeforeFlush = w.size;
      // another connection sees nothing yet
      if (name === 'postgres') expect(await absent('Patient', 'uow-1')).toBeUndefined();
    });
    expect(pendingBeforeFlush).toBe(1);
    expect(await versions('Patient', 'uow-1')).toEqual(['1', '2', '3']);
    expect((await store.repo.vread<Patient>('Patient', 'uow-1', '2')).name?.[0].family).toBe('Kuusk');
    expect(await byFamily('Mänd')).toEqual(['uow-1']);
    expect(await byFamily('Kask')).toEqual([]); // the search index holds the current version only
  });

  test('content is stored exactly as serialised: quotes, backslashes, line breaks, escapes, õäöüšž, emoji', async () => {
    // (a FHIR string admits no control characters other than CR, LF and TAB)
    const tricky = 'Õie "Šmidt" \\ C:\\x\n\ttab \\u0041 žürii 😀 </script> {"a":[1]}';
    const p = { ...person('uow-raw', 'Kõiv'), name: [{ family: tricky, given: ['Ülle'] }] } as Patient;
    const [w1] = await inUnitOfWork(store.repo, (w) => w.updateMany([p]));
    const [w2] = await store.repo.transaction((w) => w.updateMany([{ ...p, gender: 'female' }]));
    const raw = await store.repo.readRaw('Patient', 'uow-raw');
    expect(raw.content).toBe(JSON.stringify(w2.resource));
    expect((await store.repo.vread<Patient>('Patient', 'uow-raw', '1'))).toEqual(w1.resource);
    expect((await store.repo.read<Patient>('Patient', 'uow-raw')).name?.[0].family).toBe(tricky);
  });

  test('an unchanged resource makes no version; restore undoes everything since the mark', async () => {
    await store.repo.update(person('uow-2', 'Tamm'));
    await inUnitOfWork(store.repo, async (w) => {
      const [same] = await w.updateMany([person('uow-2', 'Tamm')]);
      expect(same.outcome).toBe('unchanged');
      const m = w.mark();
      await w.updateMany([person('uow-2', 'Saar'), person('uow-3', 'Saar')]);
      expect((await w.read<Patient>('Patient', 'uow-2')).name?.[0].family).toBe('Saar');
      w.restore(m);
      expect((await w.read<Patient>('Patient', 'uow-2')).name?.[0].family).toBe('Tamm');
      expect(await w.readOptional('Patient', 'uow-3')).toBeUndefined();
      expect(w.size).toBe(0);
    });
    expect(await versions('Patient', 'uow-2')).toEqual(['1']);
    expect(await absent('Patient', 'uow-3')).toBeUndefined();
  });

  test('an invalid resource in a list leaves nothing of the list behind', async () => {
    await inUnitOfWork(store.repo, async (w) => {
      const bad = { ...person('uow-4b', 'Paju'), gender: 'neither' } as unknown as Patient;
      await expect(w.updateMany([person('uow-4a', 'Paju'), bad])).rejects.toBeInstanceOf(OutcomeError);
      expect(w.size).toBe(0);
    });
    expect(await absent('Patient', 'uow-4a')).toBeUndefined();
  });

  concurrent('a resource another writer changed after it was read is refused as busy; inUnitOfWork runs the work again', async () => {
    await store.repo.update(person('uow-5', 'Lepp'));
    // by hand: read in the unit, change it outside, flush → busy, and the transaction rolls back
    const refused = store.db.transaction(async (tx) => {
      const w = new UnitOfWork(tx, store.repo.options);
      const cur = await w.read<Patient>('Patient', 'uow-5');
      await store.repo.update({ ...person('uow-5', 'Lepp'), gender: 'female' });
      await w.updateMany([{ ...cur, name: [{ family: 'Vaher' }] }]);
      await w.flush();
    });
    await expect(refused).rejects.toMatchObject({ category: 'busy' });
    expect((await store.repo.read<Patient>('Patient', 'uow-5')).gender).toBe('female');

    // through inUnitOfWork: the first run meets the concurrent change, the second starts from the new state
    let runs = 0;
    await inUnitOfWork(store.repo, async (w) => {
      runs++;
      const cur = await w.read<Patient>('Patient', 'uow-5');
      if (runs === 1) await store.repo.update({ ...cur, birthDate: '1973-02-10' });
      await w.updateMany([{ ...cur, name: [{ family: 'Vaher' }] }]);
    });
    expect(runs).toBe(2);
    const now = await store.repo.read<Patient>('Patient', 'uow-5');
    expect(now.name?.[0].family).toBe('Vaher');
    expect(now.birthDate).toBe('1973-02-10'); // the other writer's change is kept, not overwritten
    expect(await versions('Patient', 'uow-5')).toEqual(['1', '2', '3', '4']);
  });
});
