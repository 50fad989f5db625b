/**
 * Two transactions that take the advisory locks of the same keys in different rounds can deadlock on PostgreSQL;
 * the victim's work was rolled back whole and is run again (retryDeadlocks), so the client sees both succeed, never
 * a 500 — as HL7 v2 messages and municipal imports already did (inUnitOfWork).
 */
import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
import { backends } from '../helpers/backends.js';
import { useGateway } from '../helpers/gateway.js';
import { retryDeadlocks } from '../../src/store/unit-of-work.js';

test('retryDeadlocks runs a deadlock victim or a serialisation failure again, up to four times, and nothing else', async () => {
  const failing = (codes: string[]) => {
    let calls = 0;
    const fn = async (): Promise<number> => {
      const code = codes[calls++];
      if (code) throw Object.assign(new Error(code), { code });
      return calls;
    };
    return { fn, calls: () => calls };
  };
  expect(await retryDeadlocks(failing(['40P01', '40001']).fn)).toBe(3);
  const unique = failing(['23505']);
  await expect(retryDeadlocks(unique.fn)).rejects.toThrow('23505');
  expect(unique.calls()).toBe(1);
  const always = failing(['40P01', '40P01', '40P01', '40P01', '40P01']);
  await expect(retryDeadlocks(always.fn)).rejects.toThrow('40P01');
  expect(always.calls()).toBe(4);
});

describe.each(backends())('concurrent transactions naming the same people in opposite orders on %s', (_name, makeBackend) => {
  const ctx = useGateway(makeBackend);
  const doctor = (n: number): BundleEntry => ({
    fullUrl: `urn:uuid:dr-${n}`,
    resource: { resourceType: 'Practitioner', identifier: [{ system: 'https://fhir.ee/sid/pro/est/pho', value: `D7${String(n).padStart(4, '0')}` }], name: [{ family: `Arst${n}` }] },
    request: { method: 'POST', url: 'Practitioner', ifNoneExist: `identifier=https://fhir.ee/sid/pro/est/pho|D7${String(n).padStart(4, '0')}` },
  });
  const post = async (entry: BundleEntry[]) => {
    const res = await fetch(`${ctx.base}`, { method: 'POST', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }) });
    return { status: res.status, body: (await res.json()) as Bundle };
  };

  test('every transaction succeeds and each person exists once', async () => {
    const people = Array.from({ length: 6 }, (_, i) => doctor(i));
    const rounds = Array.from({ length: 8 }, (_, i) => (i % 2 ? [...people].reverse() : people));
    const answers = await Promise.all(rounds.map(post));
    expect(answers.map((a) => a.status)).toEqual(rounds.map(() => 200));
    for (let i = 0; i < people.length; i++) {
      const found = (await (await fetch(`${ctx.base}/Practitioner?identifier=https://fhir.ee/sid/pro/est/pho|D7${String(i).padStart(4, '0')}`)).json()) as Bundle;
      expect(found.entry ?? []).toHaveLength(1);
    }
  });
});
