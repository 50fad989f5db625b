/**
 * Facts: the small, comparable statements a set of FHIR resources makes about a message ("the patient has
 * identifier PATID1234", "the encounter ended at 2015-02-09 10:24 UTC"). The fidelity check (fidelity.test.ts)
 * counts how many of the facts in Microsoft FHIR-Converter's expected Bundle our own conversion also carries.
 *
 * Two converters say the same thing in different forms, so every value is normalised to what it means:
 * - identifiers by value only (the systems each converter invents differ);
 * - names as "family given…", lower-cased, prefixes and suffixes left out;
 * - addresses as "lines | city | postal code", lower-cased;
 * - telecoms by their digits when they are phone numbers, else the value lower-cased;
 * - codes by code value only (one fact per coding; a concept with no coding by its text), systems differ;
 * - references never by id (ids differ) but by what they point at: a practitioner's name (else identifier),
 *   a location's name (else identifier);
 * - dates and dateTimes cut to the minute.
 * Whether two dates, or two names, are the same is decided by sameValue (below), not by string equality.
 * Facts are a multiset: the same fact twice counts twice.
 */
import type {
  AllergyIntolerance, Address, CodeableConcept, ContactPoint, Coverage, DiagnosticReport, DocumentReference, Encounter, HumanName, Identifier,
  Observation, Patient, Practitioner, Procedure, Reference, RelatedPerson, Resource, ServiceRequest, Condition,
} from '@medplum/fhirtypes';

export interface Fact {
  kind: string;
  value: string;
}

/** Finds a referenced resource among the ones being read ("Practitioner/123" or "urn:uuid:123"). */
type Resolve = (ref: Reference | undefined) => Resource | undefined;
type Values = (string | undefined)[];

/**
 * The fact kinds: one row each; the resource type is the kind up to its first dot. A kind marked 'date' or 'name'
 * compares its values as dates or names (sameValue), any other by equality.
 */
const KINDS: Row[] = [
  row<Patient>('Patient.identifier', (r) => (r.identifier ?? []).map(identifier)),
  row<Patient>('Patient.name', (r) => (r.name ?? []).map(name), 'name'),
  row<Patient>('Patient.address', (r) => (r.address ?? []).map(address)),
  row<Patient>('Patient.telecom', (r) => (r.telecom ?? []).map(telecom)),
  row<Patient>('Patient.birthDate', (r) => [date(r.birthDate)], 'date'),
  row<Patient>('Patient.gender', (r) => [r.gender]),
  row<Patient>('Patient.maritalStatus', (r) => codes(r.maritalStatus)),
  row<Encounter>('Encounter.identifier', (r) => (r.identifier ?? []).map(identifier)),
  row<Encounter>('Encounter.status', (r) => [r.status]),
  row<Encounter>('Encounter.class', (r) => [r.class?.code]),
  row<Encounter>('Encounter.period.start', (r) => [date(r.period?.start)], 'date'),
  row<Encounter>('Encounter.period.end', (r) => [date(r.period?.end)], 'date'),
  row<Encounter>('Encounter.hospitalization.dischargeDisposition', (r) => codes(r.hospitalization?.dischargeDisposition)),
  row<Encounter>('Encounter.participant', (r, resolve) => (r.participant ?? []).map((p) => person(resolve(p.individual), resolve)), 'name'),
  row<Encounter>('Encounter.location', (r, resolve) => (r.location ?? []).map((l) => place(resolve(l.location)))),
  row<Condition>('Condition.code', (r) => codes(r.code)),
  row<AllergyIntolerance>('AllergyIntolerance.code', (r) => codes(r.code)),
  row<AllergyIntolerance>('AllergyIntolerance.reaction', (r) => (r.reaction ?? []).flatMap((x) => x.manifestation.flatMap(codes))),
  row<Procedure>('Procedure.code', (r) => codes(r.code)),
  row<Observation>('Observation.code', (r) => codes(r.code)),
  // a repeated OBX-5 is one value here and components there: every value counts, wherever it sits
  row<Observation>('Observation.value', (r) => [r, ...(r.component ?? [])].flatMap(observationValue)),
  row<RelatedPerson>('RelatedPerson.name', (r) => (r.name ?? []).map(name), 'name'),
  row<RelatedPerson>('RelatedPerson.relationship', (r) => (r.relationship ?? []).flatMap(codes)),
  row<RelatedPerson>('RelatedPerson.telecom', (r) => (r.telecom ?? []).map(telecom)),
  row<RelatedPerson>('RelatedPerson.address', (r) => (r.address ?? []).map(address)),
  row<Practitioner>('Practitioner.identifier', (r) => (r.identifier ?? []).map(identifier)),
  row<Practitioner>('Practitioner.name', (r) => (r.name ?? []).map(name), 'name'),
  row<DocumentReference>('DocumentReference.identifier', (r) => [r.masterIdentifier, ...(r.identifier ?? [])].map(identifier)),
  row<ServiceRequest>('ServiceRequest.identifier', (r) => (r.identifier ?? []).map(identifier)),
  row<DiagnosticReport>('DiagnosticReport.identifier', (r) => (r.identifier ?? []).map(identifier)),
  row<DiagnosticReport>('DiagnosticReport.code', (r) => codes(r.code)),
  row<Coverage>('Coverage.identifier', (r) => (r.identifier ?? []).map(identifier)),
];

interface Row {
  kind: string;
  resourceType: string;
  values: (r: Resource, resolve: Resolve) => Values;
  like?: 'date' | 'name';
}

function row<T extends Resource>(kind: string, values: (r: T, resolve: Resolve) => Values, like?: Row['like']): Row {
  return { kind, resourceType: kind.split('.')[0], values: values as Row['values'], like };
}

/** The facts the resources carry (empty values are no facts). */
export function facts(resources: Resource[]): Fact[] {
  const byRef = new Map<string, Resource>();
  for (const r of resources) {
    byRef.set(`${r.resourceType}/${r.id}`, r);
    byRef.set(`urn:uuid:${r.id}`, r);
  }
  const resolve: Resolve = (ref) => (ref?.reference ? byRef.get(ref.reference) : undefined);
  const out: Fact[] = [];
  for (const r of resources) {
    for (const k of KINDS.filter((x) => x.resourceType === r.resourceType)) {
      for (const value of k.values(r, resolve)) if (value) out.push({ kind: k.kind, value });
    }
  }
  return out;
}

/**
 * Whether two values of a kind mean the same. Strings compare equal; besides:
 *
 * Dates and dateTimes (cut to the minute by `date`) are the same when
 * - one is a prefix of the other, time zone ignored ("2015-02-09" and "2015-02-09T11:34+01:10"; the same wall-clock
 *   minute with different offsets): the precision both share decides; or
 * - both have a time and an offset and name the same instant. Microsoft FHIR-Converter re-expresses a v2 time that
 *   has an offset in the offset of the machine that ran it (11:34+01:10 becomes 15:54+05:30), while we keep the
 *   sender's; a v2 time without an offset both take as wall-clock time, so only the first rule matches those.
 *
 * Names are the same when the words of one are the leading words of the other and it has at least a family and a
 * given name: "everyman adam a" and "everyman adam a addsm" (Microsoft appends XPN-15, the called-by name, to the
 * given names) are one person; "everyman" alone is not enough to say so.
 */
export function sameValue(kind: string, a: string, b: string): boolean {
  if (a === b) return true;
  const like = KINDS.find((k) => k.kind === kind)?.like;
  if (like === 'name') {
    const [short, long] = a.length < b.length ? [a, b] : [b, a];
    return short.includes(' ') && long.startsWith(`${short} `);
  }
  if (like !== 'date') return false;
  const [la, lb] = [a, b].map((v) => v.replace(/(Z|[+-]\d\d:\d\d)$/, ''));
  if (la.startsWith(lb) || lb.startsWith(la)) return true;
  const utc = (v: string) => (/T.*(Z|[+-]\d\d:\d\d)$/.test(v) ? Date.parse(v) : NaN);
  return !Number.isNaN(utc(a)) && utc(a) === utc(b);
}

/**
 * The multiset intersection of expected and ours: how many expected facts ours carries, and the ones it does not.
 * Exact matches are paired first, so a value that only matches loosely (sameValue) cannot take the place of an exact one.
 */
export function carried(expected: Fact[], ours: Fact[]): { carried: number; missing: Fact[] } {
  const free = [...ours];
  const take = (f: Fact, same: (a: string, b: string) => boolean): boolean => {
    const i = free.findIndex((o) => o.kind === f.kind && same(f.value, o.value));
    if (i >= 0) free.splice(i, 1);
    return i >= 0;
  };
  const left = expected.filter((f) => !take(f, (a, b) => a === b));
  const missing = left.filter((f) => !take(f, (a, b) => sameValue(f.kind, a, b)));
  return { carried: expected.length - missing.length, missing };
}

const text = (s: string | undefined): string | undefined => s?.replace(/\s+/g, ' ').trim().toLowerCase() || undefined;

function identifier(i: Identifier | undefined): string | undefined {
  return i?.value?.trim() || undefined;
}

function name(n: HumanName): string | undefined {
  return text([n.family, ...(n.given ?? [])].filter(Boolean).join(' ')) ?? text(n.text);
}

function address(a: Address): string | undefined {
  const parts = [(a.line ?? []).join(' '), a.city, a.postalCode].map((p) => text(p) ?? '');
  return parts.some(Boolean) ? parts.join(' | ') : text(a.text);
}

function telecom(t: ContactPoint): string | undefined {
  const v = t.value?.trim();
  // "(555) 555-2004" and "5555552004" are one number; an e-mail address or URL keeps its characters
  return v && /^[\d\s()+\-./]+$/.test(v) ? v.replace(/\D/g, '') : text(v);
}

function codes(c: CodeableConcept | undefined): string[] {
  const cs = (c?.coding ?? []).map((x) => x.code?.trim()).filter((x): x is string => !!x);
  return cs.length ? cs : [text(c?.text)].filter((x): x is string => !!x);
}

/** A date or dateTime cut to the minute, its offset kept ("2015-02-09T11:34:19+01:10" → "2015-02-09T11:34+01:10"). */
function date(v: string | undefined): string | undefined {
  return v?.replace(/^(\d{4}(?:-\d\d){0,2})(T\d\d:\d\d)?(?::\d\d(?:\.\d+)?)?(Z|[+-]\d\d:\d\d)?$/, (_, d, t, z) => (t ? `${d}${t}${z ?? ''}` : d));
}

/** The practitioner (or related person) a reference points at, by name, else identifier; a role by its practitioner. */
function person(r: Resource | undefined, resolve: Resolve): string | undefined {
  if (r?.resourceType === 'PractitionerRole') return person(resolve(r.practitioner), resolve);
  if (r?.resourceType !== 'Practitioner' && r?.resourceType !== 'RelatedPerson') return undefined;
  return (r.name ?? []).map(name).find(Boolean) ?? (r.identifier ?? []).map(identifier).find(Boolean);
}

function place(r: Resource | undefined): string | undefined {
  if (r?.resourceType !== 'Location') return undefined;
  return text(r.name) ?? (r.identifier ?? []).map(identifier).find(Boolean);
}

/** value[x] of an observation or component: a quantity by its number, a concept by its codes, anything else as text. */
function observationValue(o: Pick<Observation, 'valueQuantity' | 'valueCodeableConcept' | 'valueString' | 'valueInteger' | 'valueBoolean' | 'valueDateTime'>): Values {
  if (o.valueQuantity?.value !== undefined) return [String(o.valueQuantity.value)];
  if (o.valueCodeableConcept) return codes(o.valueCodeableConcept);
  if (o.valueDateTime) return [date(o.valueDateTime)];
  const v = o.valueString ?? o.valueInteger ?? o.valueBoolean;
  return [v === undefined ? undefined : text(String(v))];
}
