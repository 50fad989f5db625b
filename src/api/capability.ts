/**
 * The CapabilityStatement, generated from what is implemented: the resource types the validator knows, the
 * interactions FhirApi routes, and the search parameters the search engine supports (every R4 parameter of a
 * supported type). Nothing here is written by hand per resource type, so it cannot drift from the code.
 *
 * @see https://hl7.org/fhir/R4/capabilitystatement.html
 */
import { conformanceResources } from '../fhir/profiles.js';
import type { CapabilityStatement, CapabilityStatementRestResource, StructureDefinition } from '@medplum/fhirtypes';
import { resourceTypes } from '../fhir/definitions.js';
import { searchParamsFor } from '../fhir/searchparams.js';

/** Interactions FhirApi implements for every resource type. */
export const TYPE_INTERACTIONS = ['read', 'vread', 'update', 'delete', 'history-instance', 'history-type', 'create', 'search-type'] as const;
/** Search parameter types the search engine (src/store/search.ts) implements. */
export const SUPPORTED_SEARCH_TYPES = new Set(['token', 'reference', 'date', 'string', 'uri', 'number', 'quantity']);

let cached: CapabilityStatement | undefined;
let cachedBase: string | undefined;

/** What the IHE care-planning service actors ask of these types, all of which the generic interactions give. */
const IHE: Record<string, string> = {
  CarePlan:
    'IHE PCC Dynamic Care Planning (DCP), Care Plan Service: create, update, read, search (patient, patient.identifier, status, category, date) with _include CarePlan:care-team / goal / activity-reference and _revinclude Provenance:target, history.',
  CareTeam:
    'IHE PCC Dynamic Care Team Management (DCTM), Care Team Service: create, update, read, search (patient, participant, participant chained by identifier, status, date) with _include CareTeam:participant, history.',
};

export function capabilityStatement(baseUrl: string): CapabilityStatement {
  if (cached && cachedBase === baseUrl) return cached;
  // _revinclude: every reference parameter of any type that may point at this type
  const revIncludes = new Map<string, string[]>();
  for (const source of resourceTypes()) {
    for (const p of searchParamsFor(source)?.values() ?? []) {
      if (p.type !== 'reference') continue;
      for (const t of p.targets) revIncludes.set(t, [...(revIncludes.get(t) ?? []), `${source}:${p.code}`]);
    }
  }
  const resource: CapabilityStatementRestResource[] = [...resourceTypes()].sort().map((type) => {
    const params = [...(searchParamsFor(type)?.values() ?? [])]
      .filter((p) => SUPPORTED_SEARCH_TYPES.has(p.type) && !p.code.startsWith('_'))
      .sort((a, b) => a.code.localeCompare(b.code))
      .map((p) => ({
        name: p.code,
        type: p.type as 'token',
        definition: p.url,
      }));
    const supportedProfile = conformanceResources()
      .filter((r): r is StructureDefinition => r.resourceType === 'StructureDefinition' && r.kind === 'resource' && r.type === type)
      .map((r) => r.url!);
    const includes = params.filter((p) => p.type === ('reference' as string)).map((p) => `${type}:${p.name}`);
    return {
      type: type as CapabilityStatementRestResource['type'],
      ...(IHE[type] ? { documentation: IHE[type] } : {}),
      ...(supportedProfile.length ? { supportedProfile } : {}),
      interaction: TYPE_INTERACTIONS.map((code) => ({ code })),
      operation: [
        { name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' },
        ...(type === 'Patient' ? [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] : []),
      ],
      versioning: 'versioned' as const,
      readHistory: true,
      updateCreate: true,
      conditionalCreate: true,
      conditionalRead: 'not-supported' as const,
      conditionalUpdate: true,
      conditionalDelete: 'not-supported' as const,
      searchInclude: ['*', ...includes],
      searchRevInclude: ['*', ...(revIncludes.get(type) ?? []).sort()],
      searchParam: [
        { name: '_id', type: 'token' as const, definition: 'http://hl7.org/fhir/SearchParameter/Resource-id' },
        { name: '_lastUpdated', type: 'date' as const, definition: 'http://hl7.org/fhir/SearchParameter/Resource-lastUpdated' },
        ...params,
      ],
    };
  });
  cached = {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'care-gateway', version: '0.1.0' },
    implementation: { description: 'care-gateway: one shared care plan per person across hospital, GP and municipality', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'application/json'],
    rest: [
      {
        mode: 'server',
        // SMART Backend Services bearer tokens when AUTH_JWKS is set (README "Security")
        security: {
          service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
          description:
            'OAuth 2.0 bearer JWTs as in SMART Backend Services (system/ scopes, v1 and v2), with the claims organization and organization_kind; access is scoped to the people the organisation cares for, consent and minimum-necessary rules apply.',
        },
        resource,
        // transaction: all or nothing, urn:uuid references resolved; batch: entry by entry (src/ingest/fhir/bundle.ts)
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'history-system' }],
        operation: [{ name: 'process-message', definition: 'http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message' }],
      },
    ],
    messaging: [{ documentation: 'POST /fhir/$process-message; the supported MessageHeader events are listed in mappings/fhir/message-events.yaml' }],
  };
  cachedBase = baseUrl;
  return cached as CapabilityStatement;
}
