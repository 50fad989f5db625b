/**
 * The municipality directory: every registry code it carries passes the Business Register check digit, and an
 * Organization named by one of them is that municipality (its access and its team membership follow).
 */
import { municipalities, municipalityOrganization } from '../../src/county/directory.js';
import { checkRegistryCode } from '../../src/fhir/identifiers.js';

test('registry codes in the directory are real codes (check digit), and the municipality Organization carries its code', () => {
  const withCode = [...municipalities().values()].filter((m) => m.registryCode);
  expect(withCode.map((m) => m.name).sort()).toEqual(['Elva vald', 'Kastre vald', 'Nõo vald', 'Tartu linn']);
  for (const m of withCode) {
    expect([m.name, checkRegistryCode(m.registryCode!)]).toEqual([m.name, true]);
    const org = municipalityOrganization(m);
    expect(org.identifier).toContainEqual({ system: 'https://fhir.ee/sid/org/est/br', value: m.registryCode });
    expect(org.id).toBe(`ehak-${m.ehak}`);
  }
  // the eight local governments of Tartu county
  expect([...municipalities().values()].filter((m) => m.county === '0079')).toHaveLength(8);
});
