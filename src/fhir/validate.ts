/**
 * Validation of every resource written, from any source, fast enough for the hot path:
 * 1. the official FHIR R4 JSON schema, with one ajv validator compiled per resource type (lazily, then cached);
 * 2. the base StructureDefinitions: minimum cardinality of elements inside the resource (which the JSON schema
 *    does not check), compiled once from the snapshots;
 * 3. invariants the schema cannot express (cpl-3, ctm-1, per-1, pat-1, …) as small predicates.
 * Every issue is collected with its FHIRPath and returned at once.
 *
 * @see https://hl7.org/fhir/R4/json.html#schema, https://hl7.org/fhir/R4/validation.html
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { StructureDefinition } from '@medplum/fhirtypes';
import type { OperationOutcomeIssue, Resource } from './types.js';
import { OutcomeError, issue, hasErrors } from './outcome.js';
import { readDefinitions, isResourceType } from './definitions.js';

let ajv: Ajv | undefined;
const validators = new Map<string, ValidateFunction>();

function schemaAjv(): Ajv {
  if (ajv) return ajv;
  const schema = structuredClone(readDefinitions<Record<string, unknown>>('fhir.schema.json')) as {
    definitions: Record<string, unknown>;
    id?: string;
    $schema?: string;
    oneOf?: unknown;
    discriminator?: unknown;
  };
  // The published schema leaves two $refs dangling; define them (any resource is checked on its own, see contained).
  schema.definitions.Resource ??= { type: 'object', properties: { resourceType: { type: 'string' } }, required: ['resourceType'] };
  schema.definitions.integer64 ??= { type: 'string', pattern: '^[0]|[-+]?[1-9][0-9]*$' };
  // contained resources are validated one by one with their own type's validator (clear paths, no oneOf noise)
  schema.definitions.ResourceList = { type: 'object', properties: { resourceType: { type: 'string' } }, required: ['resourceType'] };
  delete schema.$schema;
  delete schema.oneOf;
  delete schema.discriminator;
  delete schema.id;
  ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
  ajv.addSchema(schema, 'fhir');
  return ajv;
}

function validatorFor(type: string): ValidateFunction {
  const cached = validators.get(type);
  if (cached) return cached;
  const v = schemaAjv().compile({ $ref: `fhir#/definitions/${type}` });
  validators.set(type, v);
  return v;
}

/** `/name/0/given/1` under `Patient` → `Patient.name[0].given[1]` */
function fhirPath(base: string, instancePath: string): string {
  let out = base;
  for (const seg of instancePath.split('/').slice(1)) out += /^\d+$/.test(seg) ? `[${seg}]` : `.${seg.replace(/~1/g, '/').replace(/~0/g, '~')}`;
  return out;
}

function schemaIssues(base: string, errors: ErrorObject[]): OperationOutcomeIssue[] {
  const out = new Map<string, OperationOutcomeIssue>();
  for (const e of errors) {
    let where = fhirPath(base, e.instancePath);
    let text: string;
    switch (e.keyword) {
      case 'additionalProperties':
        where = `${where}.${(e.params as { additionalProperty: string }).additionalProperty}`;
        text = `unknown element "${(e.params as { additionalProperty: string }).additionalProperty}"`;
        break;
      case 'required':
        where = `${where}.${(e.params as { missingProperty: string }).missingProperty}`;
        text = `missing required element`;
        break;
      case 'enum': {
        const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map(String);
        text = `value not allowed; expected one of ${allowed.slice(0, 12).join(', ')}${allowed.length > 12 ? ', …' : ''}`;
        break;
      }
      case 'pattern':
        text = `value does not have the format of this FHIR data type`;
        break;
      case 'type':
        text = `must be ${(e.params as { type: string }).type}`;
        break;
      case 'const':
        text = `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
        break;
      case 'oneOf':
      case 'anyOf':
      case 'if':
        continue; // the branch errors say what is wrong
      default:
        text = e.message ?? e.keyword;
    }
    const key = `${where}|${text}`;
    if (!out.has(key)) out.set(key, issue({ category: 'invalid', text: `${where}: ${text}`, where }));
  }
  return [...out.values()];
}

interface Required {
  /** path of the parent element, e.g. `CarePlan.activity`; `CarePlan` for the root */
  parent: string[];
  name: string;
  choice: boolean;
}

interface RequiredBinding {
  parent: string[];
  name: string;
  valueSet: string;
  codes: Set<string>;
}

interface TypeRules {
  required: Required[];
  bindings: RequiredBinding[];
  /** choice elements (value[x]): at most one of their typed names may be present */
  choices: { parent: string[]; stem: string }[];
  /** paths of Period elements (per-1 is checked there) */
  periods: string[][];
}

let rulesIndex: Map<string, TypeRules> | undefined;

/** The codes of a ValueSet that includes whole code systems or listed concepts; undefined when it uses filters. */
function expandValueSet(url: string, byUrl: Map<string, Record<string, unknown>>, depth = 0): Set<string> | undefined {
  const vs = byUrl.get(url.split('|')[0]);
  if (!vs || vs.resourceType !== 'ValueSet' || depth > 3) return undefined;
  const compose = vs.compose as { include?: Record<string, unknown>[]; exclude?: unknown[] } | undefined;
  if (!compose?.include || compose.exclude) return undefined;
  const codes = new Set<string>();
  for (const inc of compose.include) {
    if (inc.filter) return undefined;
    for (const nested of (inc.valueSet as string[] | undefined) ?? []) {
      const sub = expandValueSet(nested, byUrl, depth + 1);
      if (!sub) return undefined;
      sub.forEach((c) => codes.add(c));
    }
    if (Array.isArray(inc.concept)) for (const c of inc.concept as { code: string }[]) codes.add(c.code);
    else if (typeof inc.system === 'string') {
      const cs = byUrl.get(inc.system);
      if (!cs || cs.resourceType !== 'CodeSystem' || cs.content !== 'complete') return undefined;
      const add = (list: { code: string; concept?: unknown[] }[] | undefined): void =>
        list?.forEach((c) => {
          codes.add(c.code);
          add(c.concept as { code: string; concept?: unknown[] }[] | undefined);
        });
      add(cs.concept as { code: string; concept?: unknown[] }[] | undefined);
    }
  }
  return codes.size ? codes : undefined;
}

/** min ≥ 1 elements and required code bindings of each resource type, compiled once from the R4 snapshots. */
function typeRules(type: string): TypeRules {
  if (!rulesIndex) {
    rulesIndex = new Map();
    const vsBundle = readDefinitions<{ entry: { resource: Record<string, unknown> }[] }>('valuesets.json');
    const byUrl = new Map(vsBundle.entry.map((e) => [String(e.resource.url), e.resource]));
    const expanded = new Map<string, Set<string> | undefined>();
    const bundle = readDefinitions<{ entry: { resource: StructureDefinition }[] }>('profiles-resources.json');
    for (const { resource: sd } of bundle.entry) {
      if (sd.resourceType !== 'StructureDefinition' || sd.kind !== 'resource' || !sd.type || sd.derivation === 'constraint') continue;
      const rules: TypeRules = { required: [], bindings: [], choices: [], periods: [] };
      for (const el of sd.snapshot?.element ?? []) {
        const parts = el.path.split('.');
        if (parts.length < 2 || el.contentReference) continue;
        const name = parts[parts.length - 1];
        if (name.endsWith('[x]')) rules.choices.push({ parent: parts.slice(1, -1), stem: name.slice(0, -3) });
        for (const t of el.type ?? []) {
          if (t.code === 'Period') rules.periods.push(name.endsWith('[x]') ? [...parts.slice(1, -1), `${name.slice(0, -3)}Period`] : parts.slice(1));
        }
        if ((el.min ?? 0) >= 1) rules.required.push({ parent: parts.slice(1, -1), name: name.replace('[x]', ''), choice: name.endsWith('[x]') });
        const vsUrl = el.binding?.valueSet;
        if (el.binding?.strength === 'required' && vsUrl && el.type?.length === 1 && el.type[0].code === 'code' && !name.endsWith('[x]')) {
          if (!expanded.has(vsUrl)) expanded.set(vsUrl, expandValueSet(vsUrl, byUrl));
          const codes = expanded.get(vsUrl);
          if (codes) rules.bindings.push({ parent: parts.slice(1, -1), name, valueSet: vsUrl.split('|')[0], codes });
        }
      }
      rulesIndex.set(sd.type, rules);
    }
  }
  return rulesIndex.get(type) ?? { required: [], bindings: [], choices: [], periods: [] };
}

type Obj = Record<string, unknown>;

function walk(node: unknown, path: string[], at: string, visit: (obj: Obj, where: string) => void): void {
  if (Array.isArray(node)) {
    node.forEach((n, i) => walk(n, path, `${at}[${i}]`, visit));
    return;
  }
  if (!node || typeof node !== 'object') return;
  if (path.length === 0) {
    visit(node as Obj, at);
    return;
  }
  walk((node as Obj)[path[0]], path.slice(1), `${at}.${path[0]}`, visit);
}

function bindingIssues(r: Resource): OperationOutcomeIssue[] {
  const out: OperationOutcomeIssue[] = [];
  for (const b of typeRules(r.resourceType).bindings) {
    walk(r, b.parent, r.resourceType, (obj, where) => {
      const v = obj[b.name];
      const values = Array.isArray(v) ? v : v === undefined ? [] : [v];
      values.forEach((code, i) => {
        if (typeof code === 'string' && !b.codes.has(code)) {
          const at = `${where}.${b.name}${Array.isArray(v) ? `[${i}]` : ''}`;
          const list = [...b.codes];
          out.push(
            issue({
              category: 'invalid',
              text: `${at}: "${code}" is not in the required value set ${b.valueSet} (${list.slice(0, 10).join(', ')}${list.length > 10 ? ', …' : ''})`,
              where: at,
            }),
          );
        }
      });
    });
  }
  return out;
}

function choiceIssues(r: Resource): OperationOutcomeIssue[] {
  const out: OperationOutcomeIssue[] = [];
  for (const c of typeRules(r.resourceType).choices) {
    walk(r, c.parent, r.resourceType, (obj, where) => {
      const names = Object.keys(obj).filter((k) => k.startsWith(c.stem) && /^[A-Z]/.test(k.slice(c.stem.length)));
      if (names.length > 1) out.push(issue({ category: 'invalid', text: `${where}.${c.stem}[x] has one value, but ${names.join(' and ')} are both present`, where: `${where}.${names[1]}` }));
    });
  }
  return out;
}

function cardinalityIssues(r: Resource): OperationOutcomeIssue[] {
  const out: OperationOutcomeIssue[] = [];
  for (const req of typeRules(r.resourceType).required) {
    walk(r, req.parent, r.resourceType, (obj, where) => {
      const present = req.choice ? Object.keys(obj).some((k) => k.startsWith(req.name) && /^[A-Z]/.test(k.slice(req.name.length))) : obj[req.name] !== undefined;
      if (!present) out.push(issue({ category: 'invalid', text: `${where}.${req.name}${req.choice ? '[x]' : ''}: missing required element (min 1)`, where: `${where}.${req.name}` }));
    });
  }
  return out;
}

/** Invariants JSON schema cannot express, by their FHIR constraint key. */
const INVARIANTS: { key: string; human: string; types: string[] | '*'; check: (r: Obj, add: (where: string) => void) => void }[] = [
  {
    key: 'cpl-3',
    human: 'Provide a reference or detail, not both',
    types: ['CarePlan'],
    check: (r, add) => (r.activity as Obj[] | undefined)?.forEach((a, i) => a.reference && a.detail && add(`CarePlan.activity[${i}]`)),
  },
  {
    key: 'ctm-1',
    human: 'CareTeam.participant.onBehalfOf can only be populated when CareTeam.participant.member is a Practitioner',
    types: ['CareTeam'],
    check: (r, add) =>
      (r.participant as Obj[] | undefined)?.forEach((p, i) => {
        const member = ((p.member as Obj | undefined)?.reference as string | undefined) ?? '';
        const contained = ((r.contained as Obj[] | undefined) ?? []).find((c) => `#${c.id}` === member);
        const isPractitioner = contained ? contained.resourceType === 'Practitioner' : /(^|\/)Practitioner\/[^/]+$/.test(member);
        if (p.onBehalfOf && !isPractitioner) add(`CareTeam.participant[${i}]`);
      }),
  },
  {
    key: 'pat-1',
    human: 'SHALL at least contain a contact\'s details or a reference to an organization',
    types: ['Patient'],
    check: (r, add) =>
      (r.contact as Obj[] | undefined)?.forEach((c, i) => {
        if (!c.name && !c.telecom && !c.address && !c.organization) add(`Patient.contact[${i}]`);
      }),
  },
  {
    key: 'per-1',
    human: 'If present, start SHALL have a lower value than end',
    types: '*',
    check: (r, add) => {
      // at every Period element of the type (from its StructureDefinition), not by walking the whole resource
      for (const p of typeRules(r.resourceType as string).periods) {
        walk(r, p, r.resourceType as string, (o, at) => {
          if (typeof o.start !== 'string' || typeof o.end !== 'string') return;
          const s = Date.parse(o.start.length === 4 ? `${o.start}-01-01` : o.start);
          const e = Date.parse(o.end.length === 4 ? `${o.end}-12-31` : o.end);
          if (!Number.isNaN(s) && !Number.isNaN(e) && s > e) add(at);
        });
      }
    },
  },
];

function invariantIssues(r: Resource): OperationOutcomeIssue[] {
  const out: OperationOutcomeIssue[] = [];
  for (const inv of INVARIANTS) {
    if (inv.types !== '*' && !inv.types.includes(r.resourceType)) continue;
    inv.check(r as unknown as Obj, (where) => out.push(issue({ category: 'invalid', text: `${inv.key}: ${inv.human}`, where })));
  }
  return out;
}

/** Every problem with a resource (error issues; an empty list means valid). */
export function validateResource(resource: unknown, base?: string): OperationOutcomeIssue[] {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    return [issue({ category: 'structure', text: 'a resource must be a JSON object', where: base ?? 'Resource' })];
  }
  const type = (resource as { resourceType?: unknown }).resourceType;
  if (typeof type !== 'string' || !isResourceType(type)) {
    return [issue({ category: 'invalid', text: `resourceType ${JSON.stringify(type)} is not a FHIR R4 resource type`, where: base ? `${base}.resourceType` : 'resourceType' })];
  }
  const r = resource as Resource;
  const at = base ?? type;
  const v = validatorFor(type);
  const issues: OperationOutcomeIssue[] = [];
  if (!v(r)) issues.push(...schemaIssues(at, (v.errors ?? []).filter((e) => !/^\/contained\/\d+\//.test(e.instancePath))));
  const rebase = (list: OperationOutcomeIssue[]): OperationOutcomeIssue[] =>
    base ? list.map((i) => ({ ...i, expression: i.expression?.map((e) => e.replace(new RegExp(`^${type}`), base)) })) : list;
  // the schema already reports some missing elements; report each place once
  const reported = new Set(issues.flatMap((i) => i.expression ?? []));
  const fresh = (list: OperationOutcomeIssue[]): OperationOutcomeIssue[] => rebase(list).filter((i) => !reported.has(i.expression?.[0] ?? ''));
  issues.push(...fresh(cardinalityIssues(r)), ...fresh(bindingIssues(r)), ...rebase(choiceIssues(r)), ...rebase(invariantIssues(r)));
  ((r as { contained?: unknown[] }).contained ?? []).forEach((c, i) => issues.push(...validateResource(c, `${at}.contained[${i}]`)));
  return issues;
}

/** Throws one OutcomeError carrying every issue when the resource is not valid. */
export function assertValid(resource: unknown): void {
  const issues = validateResource(resource);
  if (hasErrors(issues)) throw OutcomeError.fromIssues('invalid', issues);
}
