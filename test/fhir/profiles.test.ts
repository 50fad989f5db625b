/**
 * The project's profiles: the published snapshots are exactly what the generator derives from the differentials
 * and the R4 base; every conformance resource is valid for our validator and for @medplum/core's; and each profile
 * refuses what it constrains, with the element's FHIRPath.
 */
import fs from 'node:fs';
import path from 'node:path';
import { indexStructureDefinitionBundle, validateResource as medplumValidate } from '@medplum/core';
import type { Bundle, CarePlan, CareTeam, Patient, Resource, ServiceRequest, StructureDefinition } from '@medplum/fhirtypes';
import { conformanceResources, generateSnapshot, profileSources, validateProfiles, PROFILE_BASE } from '../../src/fhir/profiles.js';
import { validateResource } from '../../src/fhir/validate.js';
import { readDefinitions } from '../../src/fhir/definitions.js';
import { checkResource } from '../../src/write-checks.js';

beforeAll(() => {
  indexStructureDefinitionBundle(readDefinitions<Bundle>('profiles-types.json'));
  indexStructureDefinitionBundle(readDefinitions<Bundle>('profiles-resources.json'));
});

test('published snapshots are what the generator derives from profiles/src and the R4 base', () => {
  const sources = profileSources();
  expect(sources.map((s) => path.basename(s.file))).toEqual(expect.arrayContaining(['StructureDefinition-shared-careplan.json', 'StructureDefinition-ee-patient.json']));
  for (const { file, sd } of sources) {
    const published = JSON.parse(fs.readFileSync(file, 'utf8')) as StructureDefinition;
    expect(published).toEqual(generateSnapshot(sd));
    // the snapshot carries every base element, plus the slices
    expect(published.snapshot!.element.length).toBeGreaterThan(sd.differential!.element.length);
  }
  const patient = JSON.parse(fs.readFileSync(sources.find((s) => s.sd.id === 'ee-patient')!.file, 'utf8')) as StructureDefinition;
  const slice = patient.snapshot!.element.find((e) => e.id === 'Patient.identifier:isikukood')!;
  expect(slice).toMatchObject({ sliceName: 'isikukood', max: '1', patternIdentifier: { system: 'https://fhir.ee/sid/pid/est/ni' } });
  // unfolded from the Address datatype to carry the EHAK extension slice
  expect(patient.snapshot!.element.map((e) => e.id)).toEqual(expect.arrayContaining(['Patient.address.city', 'Patient.address.extension:ehak']));
});

test('every conformance resource in profiles/ is valid for our validator and for @medplum/core', () => {
  const all = conformanceResources();
  expect(all.map((r) => `${r.resourceType}/${r.id}`)).toEqual(
    expect.arrayContaining(['CodeSystem/social-services', 'ValueSet/social-services', 'CodeSystem/care-coordination', 'StructureDefinition/shared-careteam']),
  );
  for (const r of all) {
    expect(validateResource(r).filter((i) => i.severity === 'error')).toEqual([]);
    expect(() => medplumValidate(r)).not.toThrow();
  }
});

const LA = { coding: [{ system: 'http://loinc.org', code: 'LA28865-6' }] };
const plan = (over: Partial<CarePlan> = {}): CarePlan => ({
  resourceType: 'CarePlan',
  meta: { profile: [`${PROFILE_BASE}shared-careplan`] },
  status: 'active',
  intent: 'plan',
  category: [LA],
  subject: { reference: 'Patient/p1' },
  careTeam: [{ reference: 'CareTeam/t1' }],
  activity: [{ reference: { reference: 'ServiceRequest/s1' } }],
  ...over,
});
const expressions = (r: Resource) => validateProfiles(r).map((i) => i.expression![0]);

test('shared CarePlan: category, intent, one care team, activities by reference only', () => {
  expect(validateProfiles(plan())).toEqual([]);
  expect(expressions(plan({ category: [{ text: 'other' }] }))).toEqual(['CarePlan.category[0]']);
  expect(expressions(plan({ category: undefined }))).toEqual(['CarePlan.category']);
  expect(expressions(plan({ intent: 'proposal' }))).toEqual(['CarePlan.intent']);
  expect(expressions(plan({ careTeam: undefined }))).toEqual(['CarePlan.careTeam']);
  expect(expressions(plan({ activity: [{ reference: { reference: 'ServiceRequest/s1' }, detail: { status: 'scheduled' } }] }))).toEqual(['CarePlan.activity[0].detail']);
  expect(expressions(plan({ activity: [{ outcomeReference: [{ reference: 'Observation/o' }] }] }))).toEqual(['CarePlan.activity[0].reference']);
  // without the claim, the profile does not apply (but a named one does)
  const unclaimed = plan({ meta: undefined, intent: 'proposal' });
  expect(validateProfiles(unclaimed)).toEqual([]);
  expect(validateProfiles(unclaimed, [`${PROFILE_BASE}shared-careplan`]).map((i) => i.expression![0])).toEqual(['CarePlan.intent']);
});

test('shared CareTeam, Estonian Patient slices, social-service ServiceRequest binding', () => {
  const team: CareTeam = { resourceType: 'CareTeam', meta: { profile: [`${PROFILE_BASE}shared-careteam`] }, status: 'active', category: [LA], subject: { reference: 'Patient/p1' }, participant: [{ role: [{ text: 'Patient' }] }] };
  expect(expressions(team)).toEqual(['CareTeam.participant[0].member']);

  const NI = 'https://fhir.ee/sid/pid/est/ni';
  const patient: Patient = { resourceType: 'Patient', meta: { profile: [`${PROFILE_BASE}ee-patient`] }, identifier: [{ system: NI, value: '37302102711' }, { system: NI, value: '44501231007' }] };
  expect(validateProfiles(patient)).toEqual([expect.objectContaining({ expression: ['Patient.identifier[1]'], code: 'structure' })]);

  const sr: ServiceRequest = {
    resourceType: 'ServiceRequest',
    meta: { profile: [`${PROFILE_BASE}social-service-request`] },
    identifier: [{ value: 'D-1' }],
    status: 'active',
    intent: 'order',
    code: { coding: [{ system: 'https://care-gateway.ee/fhir/CodeSystem/social-services', code: 'home-care' }] },
    subject: { reference: 'Patient/p1' },
    occurrencePeriod: { start: '2026-12-01' },
    requester: { reference: 'Organization/ehak-0793' },
  };
  expect(validateProfiles(sr)).toEqual([]);
  const bad = { ...sr, code: { coding: [{ system: 'https://care-gateway.ee/fhir/CodeSystem/social-services', code: 'snow-clearing' }] }, occurrencePeriod: undefined };
  expect(validateProfiles(bad).map((i) => [i.expression![0], i.code])).toEqual([
    ['ServiceRequest.code', 'code-invalid'],
    ['ServiceRequest.occurrence', 'required'],
  ]);
  // an unknown project profile is an error; base errors come first and alone
  expect(validateProfiles({ ...sr, meta: { profile: [`${PROFILE_BASE}nope`] } })[0].code).toBe('not-found');
  expect(checkResource({ ...bad, status: 'bogus' }).map((i) => i.expression![0])).toEqual(['ServiceRequest.status']);
});
