/**
 * "Nothing is lost": a gateway process killed with SIGKILL right after answering 201 Created still has the
 * resource after a restart, on both backends. And a graceful SIGTERM exits cleanly.
 */
import type { Patient } from '@medplum/fhirtypes';
import { backends, type Backend } from '../helpers/backends.js';
import { spawnGateway, killed } from '../helpers/gateway.js';

describe.each(backends())('process durability on %s', (_name, makeBackend) => {
  let backend: Backend;

  beforeAll(async () => {
    backend = makeBackend();
    await backend.open().then((s) => s.close());
  });
  afterAll(() => backend.cleanup());

  test('a resource acknowledged with 201 survives SIGKILL of the gateway', async () => {
    const first = await spawnGateway(backend.env());
    const res = await fetch(`${first.url}/fhir/Patient`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/fhir+json' },
      body: JSON.stringify({ resourceType: 'Patient', name: [{ family: 'Põder', given: ['Ülle'] }] }),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as Patient;
    await killed(first.proc, 'SIGKILL');

    const second = await spawnGateway(backend.env());
    const read = await fetch(`${second.url}/fhir/Patient/${id}`);
    expect(read.status).toBe(200);
    expect(((await read.json()) as Patient).name?.[0].family).toBe('Põder');
    const inbox = (await (await fetch(`${second.url}/admin/messages?channel=fhir`)).json()) as { entries: { status: string }[] };
    expect(inbox.entries.some((e) => e.status === 'processed')).toBe(true);

    expect(await killed(second.proc, 'SIGTERM')).toBe(0);
  });
});
