/**
 * Validation of every resource written, from any source, fast enough for the hot path. Three layers, one walk each:
 * 1. the official FHIR R4 JSON schema, with one ajv validator per resource type (compiled by the build, else lazily) —
 *    types, formats (`id`, dates, …), `meta` shape, code enums of required bindings, unknown elements;
 * 2. the base StructureDefinitions (profiles-resources.json and profiles-types.json, compiled by the build):
 *    minimum cardinality at every level (root, backbone elements, data types such as Extension.url), and at most
 *    one value per choice element (`deceased[x]`) — things JSON schema does not say;
 * 3. a table of invariants JSON schema cannot express (cpl-3, ctm-1, ref-1, dom-2…5, pat-1, prr-1, per-1, ext-1, ele-1) as
 *    small predicates keyed by their FHIR constraint key, with the human text read from the StructureDefinitions.
 * Contained resources, Bundle.entry.resource and Parameters.parameter.resource are validated as resources of their
 * own type (paths like `Bundle.entry[0].resource.name[0]`), which also avoids the noise of the schema's root oneOf.
 * Every issue comes back at once with its FHIRPath; nothing stops at the first problem.
 *
 * Longer than most files here: the three layers share one walk of the resource and its paths; split, each would
 * walk the resource again on the hot path.
 *
 * @see https://hl7.org/fhir/R4/validation.html
 * @see https://hl7.org/fhir/R4/json.html#schema
 * @see https://hl7.org/fhir/R4/conformance-rules.html#constraints
 * @see https://hl7.org/fhir/R4/elementdefinition.html (min, max, type, contentReference, constraint)
 */
import { createRequire } from 'node:module';
import type { Ajv, ErrorObject, ValidateFunction } from 'ajv';
import type { ElementDefinition, StructureDefinition } from '@medplum/fhirtypes';
import type { OperationOutcomeIssue } from './types.js';
import { OutcomeError, issue, hasErrors, pathText, type At } from './outcome.js';
import { derivation, readDefinitions, isResourceType } from './definitions.js';
import { SCHEMA_OPTIONS, fhirSchema, hasPrecompiledValidators, precompiledValidator } from './schema-validators.js';

type Obj = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------------------------
// Layer 1: the R4 JSON schema, one compiled validator per resource type
// ---------------------------------------------------------------------------------------------------------------

let ajv: Ajv | undefined;
const validators = new Map<string, ValidateFunction>();

function schemaAjv(): Ajv {
  if (ajv) return ajv;
  // (ajv itself only when the build's precompiled validators are missing)
  ajv = new (createRequire(import.meta.url)('ajv') as typeof import('ajv')).Ajv(SCHEMA_OPTIONS);
  ajv.addSchema(fhirSchema(), 'fhir');
  return ajv;
}

function validatorFor(type: string): ValidateFunction {
  let v = validators.get(type);
  if (!v) {
    v = precompiledValidator(type) ?? schemaAjv().compile({ $ref: `fhir#/definitions/${type}` });
    validators.set(type, v);
  }
  return v;
}

/** `/name/0/given/1` under `Patient` → `Patient.name[0].given[1]` */
export function pointerToFhirPath(base: string, instancePath: string): string {
  let out = base;
  if (!instancePath) return out;
  for (const seg of instancePath.split('/').slice(1)) {
    out += /^\d+$/.test(seg) ? `[${seg}]` : `.${seg.replace(/~1/g, '/').replace(/~0/g, '~')}`;
  }
  return out;
}

function valueAt(root: unknown, instancePath: string): unknown {
  let v = root;
  for (const seg of instancePath.split('/').slice(1)) v = v && typeof v === 'object' ? (v as Obj)[seg] : undefined;
  return v;
}

const shorten = (s: string, n = 60): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function schemaIssues(base: string, data: unknown, errors: ErrorObject[]): OperationOutcomeIssue[] {
  const out = new Map<string, OperationOutcomeIssue>();
  for (const e of errors) {
    let where = pointerToFhirPath(base, e.instancePath);
    let text: string;
    switch (e.keyword) {
      case 'additionalProperties': {
        const name = (e.params as { additionalProperty: string }).additionalProperty;
        where = `${where}.${name}`;
        text = `unknown element "${name}"`;
        break;
      }
      case 'required':
        where = `${where}.${(e.params as { missingProperty: string }).missingProperty}`;
        text = 'missing required element';
        break;
      case 'enum': {
        const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map(String);
        text = `${JSON.stringify(valueAt(data, e.instancePath))} is not allowed; expected one of ${allowed.slice(0, 10).join(' | ')}${allowed.length > 10 ? ` | … (${allowed.length} codes)` : ''}`;
        break;
      }
      case 'pattern': {
        const type = /\/definitions\/([A-Za-z0-9]+)\/pattern$/.exec(e.schemaPath)?.[1];
        const pattern = (e.params as { pattern: string }).pattern;
        text = `${shorten(JSON.stringify(valueAt(data, e.instancePath)), 40)} is not a valid ${type ? `FHIR ${type}` : 'value'} (pattern ${shorten(pattern)})`;
        break;
      }
      case 'type':
        text = `must be ${(e.params as { type: string }).type === 'array' ? 'an array' : `a JSON ${(e.params as { type: string }).type}`}`;
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

// ---------------------------------------------------------------------------------------------------------------
// Layer 2: the StructureDefinition model (every type and backbone element, by JSON property name)
// ---------------------------------------------------------------------------------------------------------------

interface ElementInfo {
  /** the type of this JSON property (one type: a choice element has one ElementInfo per `valueQuantity`, …) */
  type: string;
  /** inline (backbone) node, or the node of a complex data type; undefined for primitives */
  node?: TypeNode;
  /** for `value[x]`: `value` */
  choiceStem?: string;
  /** a required binding of a `code` element that the JSON schema does not enforce with an enum */
  binding?: { valueSet: string; codes: Set<string> };
}

interface TypeNode {
  /** StructureDefinition path: `CarePlan`, `CarePlan.activity`, `Period` */
  path: string;
  elements: Map<string, ElementInfo>;
  /** min ≥ 1 elements: the FHIRPath name and every JSON name that satisfies it */
  required: { name: string; json: string[] }[];
  invariants: Invariant[];
}

/** What an invariant predicate sees besides its node. */
interface WalkContext {
  /** %rootResource: the outermost resource (the container of contained resources) */
  root: Obj;
  /** ids of the root's contained resources */
  containedIds: Set<string>;
  /** the contained resource being walked (undefined at the root) */
  inContained?: Obj;
  /** every `#…` reference, canonical or uri value found anywhere under the root */
  localRefs: Set<string>;
  /** contained resources that refer to their container (`#`) */
  refersToContainer: Set<Obj>;
  issues: OperationOutcomeIssue[];
}

/**
 * An invariant: `context` is where the StructureDefinition declares it (an element path or a data type), `check`
 * returns true when it holds, false when the node itself violates it, or the relative paths that violate it.
 */
interface Invariant {
  key: string;
  context: string;
  /** the constraint's `human` text; replaced at load by the StructureDefinition's (a key not found there fails the load) */
  human: string;
  check: (node: Obj, ctx: WalkContext) => boolean | string[];
}

/** The FHIR date/time formats, for per-1 range comparison. Without an offset a time is taken as UTC. */
const DATE_RE = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** [earliest, latest] millisecond a FHIR date or dateTime may denote; undefined when unparseable. */
function range(v: string): [number, number] | undefined {
  const m = DATE_RE.exec(v);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  if (h !== undefined) {
    const t = Date.parse(`${y}-${mo}-${d}T${h}:${mi}:${s ?? '00'}${frac ?? ''}${tz ?? 'Z'}`);
    return Number.isNaN(t) ? undefined : [t, t + (frac ? 0 : s === undefined ? 59_999 : 999)];
  }
  const year = Number(y);
  if (mo === undefined) return [Date.UTC(year, 0, 1), Date.UTC(year + 1, 0, 1) - 1];
  if (d === undefined) return [Date.UTC(year, Number(mo) - 1, 1), Date.UTC(year, Number(mo), 1) - 1];
  const low = Date.UTC(year, Number(mo) - 1, Number(d));
  return [low, low + 86_399_999];
}

/** The resource type a Reference.reference names, by its `Type/id` tail or a contained resource; undefined if unknown. */
function referencedType(ref: unknown, ctx: WalkContext): string | undefined {
  if (typeof ref !== 'string') return undefined;
  if (ref.startsWith('#')) {
    const c = ((ctx.root.contained as Obj[] | undefined) ?? []).find((r) => r && `#${r.id}` === ref);
    return typeof c?.resourceType === 'string' ? c.resourceType : undefined;
  }
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/[A-Za-z0-9\-.]{1,64}(?:\/_history\/[^/]+)?$/.exec(ref);
  return m && isResourceType(m[1]) ? m[1] : undefined;
}

const containedList = (r: Obj): Obj[] => (Array.isArray(r.contained) ? (r.contained as Obj[]) : []).filter((c) => c && typeof c === 'object');

/** The invariants checked, by FHIR constraint key. The human text shown is the StructureDefinition's. */
export const INVARIANTS: Invariant[] = [
  {
    key: 'cpl-3',
    context: 'CarePlan.activity',
    human: 'Provide a reference or detail, not both',
    check: (n) => n.detail === undefined || n.reference === undefined,
  },
  {
    key: 'ctm-1',
    context: 'CareTeam.participant',
    human: 'CareTeam.participant.onBehalfOf can only be populated when CareTeam.participant.member is a Practitioner',
    // member.resolve().iif(empty(), true, ofType(Practitioner).exists()): a member that cannot be resolved passes
    check: (n, ctx) => {
      if (n.onBehalfOf === undefined) return true;
      const t = referencedType((n.member as Obj | undefined)?.reference, ctx);
      return t === undefined || t === 'Practitioner';
    },
  },
  {
    key: 'pat-1',
    context: 'Patient.contact',
    human: "SHALL at least contain a contact's details or a reference to an organization",
    check: (n) => n.name !== undefined || n.telecom !== undefined || n.address !== undefined || n.organization !== undefined,
  },
  {
    key: 'prr-1', // (the ServiceRequest invariant some call sr-1)
    context: 'ServiceRequest',
    human: 'orderDetail SHALL only be present if code is present',
    check: (n) => n.orderDetail === undefined || n.code !== undefined || ['orderDetail'],
  },
  {
    key: 'per-1',
    context: 'Period',
    human: 'If present, start SHALL have a lower value than end',
    // start <= end; FHIRPath gives no answer (so the invariant holds) when partial dates overlap
    check: (n) => {
      if (typeof n.start !== 'string' || typeof n.end !== 'string') return true;
      // the same precision and the same offset compare as text (the common case, no parsing)
      if (n.start.length === n.end.length && (n.start.length <= 10 || n.start.slice(-6) === n.end.slice(-6))) return n.start <= n.end;
      const s = range(n.start);
      const e = range(n.end);
      return !s || !e || s[0] <= e[1];
    },
  },
  {
    key: 'ref-1',
    context: 'Reference',
    human: 'SHALL have a contained resource if a local reference is provided',
    // `#` alone (a contained resource pointing at its container, dom-3) is allowed, as later FHIR versions say
    check: (n, ctx) => {
      const ref = n.reference;
      if (typeof ref !== 'string' || !ref.startsWith('#')) return true;
      if (ref === '#') return ctx.inContained !== undefined;
      return ctx.containedIds.has(ref.slice(1));
    },
  },
  {
    key: 'dom-2',
    context: 'DomainResource',
    human: 'If the resource is contained in another resource, it SHALL NOT contain nested Resources',
    check: (n) => containedList(n).flatMap((c, i) => (c.contained !== undefined ? [`contained[${i}].contained`] : [])),
  },
  {
    key: 'dom-3',
    context: 'DomainResource',
    human:
      'If the resource is contained in another resource, it SHALL be referred to from elsewhere in the resource or SHALL refer to the containing resource',
    check: (n, ctx) =>
      containedList(n).flatMap((c, i) =>
        (typeof c.id === 'string' && ctx.localRefs.has(`#${c.id}`)) || ctx.refersToContainer.has(c) ? [] : [`contained[${i}]`],
      ),
  },
  {
    key: 'dom-4',
    context: 'DomainResource',
    human: 'If a resource is contained in another resource, it SHALL NOT have a meta.versionId or a meta.lastUpdated',
    check: (n) =>
      containedList(n).flatMap((c, i) => {
        const meta = c.meta as Obj | undefined;
        return [meta?.versionId !== undefined ? `contained[${i}].meta.versionId` : '', meta?.lastUpdated !== undefined ? `contained[${i}].meta.lastUpdated` : ''].filter(Boolean);
      }),
  },
  {
    key: 'dom-5',
    context: 'DomainResource',
    human: 'If a resource is contained in another resource, it SHALL NOT have a security label',
    check: (n) => containedList(n).flatMap((c, i) => ((c.meta as Obj | undefined)?.security !== undefined ? [`contained[${i}].meta.security`] : [])),
  },
  {
    key: 'ext-1',
    context: 'Extension',
    human: 'Must have either extensions or value[x], not both',
    check: (n) => {
      let value = false;
      for (const k in n) if (k.startsWith('value')) value = true;
      return (n.extension !== undefined) !== value;
    },
  },
  {
    key: 'ele-1',
    context: 'Element',
    human: 'All FHIR elements must have a @value or children',
    check: (n) => {
      for (const k in n) if (k !== 'id') return true;
      return false;
    }, // (walk() inlines this test)
  },
];

interface Model {
  nodes: Map<string, TypeNode>;
  /** resource types that are DomainResources (dom-* apply) */
  domainResources: Set<string>;
  domInvariants: Invariant[];
  elementInvariants: Invariant[];
}

let model: Model | undefined;

/** The codes of a ValueSet that includes whole code systems or listed concepts; undefined when it uses filters. */
function expandValueSet(url: string, byUrl: Map<string, Obj>, depth = 0): Set<string> | undefined {
  const vs = byUrl.get(url.split('|')[0]);
  if (!vs || vs.resourceType !== 'ValueSet' || depth > 3) return undefined;
  const compose = vs.compose as { include?: Obj[]; exclude?: unknown[] } | undefined;
  if (!compose?.include || compose.exclude) return undefined;
  const codes = new Set<string>();
  type Concept = { code: string; concept?: Concept[] };
  const add = (list: Concept[] | undefined): void =>
    list?.forEach((c) => {
      codes.add(c.code);
      add(c.concept);
    });
  for (const inc of compose.include) {
    if (inc.filter) return undefined;
    for (const nested of (inc.valueSet as string[] | undefined) ?? []) {
      const sub = expandValueSet(nested, byUrl, depth + 1);
      if (!sub) return undefined;
      sub.forEach((c) => codes.add(c));
    }
    if (Array.isArray(inc.concept)) add(inc.concept as Concept[]);
    else if (typeof inc.system === 'string') {
      const cs = byUrl.get(inc.system);
      if (!cs || cs.resourceType !== 'CodeSystem' || cs.content !== 'complete') return undefined;
      add(cs.concept as Concept[] | undefined);
    }
  }
  return codes.size ? codes : undefined;
}

const cap = (s: string): string => s[0].toUpperCase() + s.slice(1);
/** `http://hl7.org/fhirpath/System.String` (the type of `id` and `extension.url`) → `string` */
const typeCode = (code: string): string => (code.startsWith('http://hl7.org/fhirpath/System.') ? code.slice(31).toLowerCase() : code);

/** Every R4 type and resource's snapshot as TypeNodes, without the invariants (code, attached in loadModel). */
interface BaseModel {
  nodes: Map<string, TypeNode>;
  /** every node by path, inline (backbone) ones included */
  allNodes: Map<string, TypeNode>;
  domainResources: Set<string>;
  /** constraint key → its human text */
  humans: Map<string, string>;
}

/** Compiles the snapshots once, at build (definitions.ts `derivation`), or in a process that finds no build. */
const baseModel = derivation('validation-model', import.meta.url, (): BaseModel => {
  const nodes = new Map<string, TypeNode>();
  const primitives = new Set<string>();
  const humans = new Map<string, string>();
  const domainResources = new Set<string>();
  const sds: StructureDefinition[] = [];
  for (const file of ['profiles-types.json', 'profiles-resources.json']) {
    for (const { resource } of readDefinitions<{ entry: { resource: StructureDefinition }[] }>(file).entry) {
      if (resource.resourceType !== 'StructureDefinition' || resource.derivation === 'constraint' || !resource.type) continue;
      if (resource.kind === 'logical') continue;
      if (resource.kind === 'primitive-type') {
        primitives.add(resource.type);
        continue;
      }
      sds.push(resource);
      if (resource.baseDefinition === 'http://hl7.org/fhir/StructureDefinition/DomainResource') domainResources.add(resource.type);
    }
  }
  const fixups: (() => void)[] = [];
  // required bindings on `code` elements: the schema has enums for most; the rest are checked here
  const schemaDefs = readDefinitions<{ definitions: Record<string, { properties?: Record<string, { enum?: unknown }> }> }>('fhir.schema.json').definitions;
  let byUrl: Map<string, Obj> | undefined;
  const expanded = new Map<string, Set<string> | undefined>();
  const requiredCodes = (el: ElementDefinition, sdType: string, parentPath: string, name: string): ElementInfo['binding'] => {
    const url = el.binding?.valueSet;
    if (el.binding?.strength !== 'required' || !url || el.type?.length !== 1 || el.type[0].code !== 'code') return undefined;
    const def = parentPath.includes('.') ? `${sdType}_${cap(parentPath.slice(parentPath.lastIndexOf('.') + 1))}` : sdType;
    if (schemaDefs[def]?.properties?.[name]?.enum) return undefined;
    if (!expanded.has(url)) {
      byUrl ??= new Map(readDefinitions<{ entry: { resource: Obj }[] }>('valuesets.json').entry.map((e) => [String(e.resource.url), e.resource]));
      expanded.set(url, expandValueSet(url, byUrl));
    }
    const codes = expanded.get(url);
    return codes && { valueSet: url.split('|')[0], codes };
  };
  for (const sd of sds) {
    const elements = sd.snapshot?.element ?? [];
    const hasChildren = new Set(elements.map((e) => e.path.slice(0, e.path.lastIndexOf('.'))));
    const byPath = new Map<string, TypeNode>();
    const nodeAt = (path: string): TypeNode => {
      let n = byPath.get(path);
      if (!n) {
        n = { path, elements: new Map(), required: [], invariants: [] };
        byPath.set(path, n);
      }
      return n;
    };
    nodes.set(sd.type!, nodeAt(sd.type!));
    for (const el of elements as ElementDefinition[]) {
      for (const c of el.constraint ?? []) if (c.key && c.human && !humans.has(c.key)) humans.set(c.key, c.human);
      const dot = el.path.lastIndexOf('.');
      if (dot < 0) continue;
      const parent = nodeAt(el.path.slice(0, dot));
      const name = el.path.slice(dot + 1);
      const choice = name.endsWith('[x]');
      const stem = choice ? name.slice(0, -3) : name;
      const json: string[] = [];
      const types = (el.type ?? []).map((t) => typeCode(t.code));
      if (el.contentReference) {
        const target = el.contentReference.slice(el.contentReference.indexOf('#') + 1);
        const info: ElementInfo = { type: 'BackboneElement' };
        fixups.push(() => (info.node = byPath.get(target)));
        parent.elements.set(stem, info);
        json.push(stem);
      } else if (hasChildren.has(el.path) && !choice) {
        parent.elements.set(stem, { type: types[0] ?? 'BackboneElement', node: nodeAt(el.path) });
        json.push(stem);
      } else {
        for (const t of types) {
          const jsonName = choice ? stem + cap(t) : stem;
          const info: ElementInfo = { type: t, choiceStem: choice ? stem : undefined };
          if (!choice) info.binding = requiredCodes(el, sd.type!, parent.path, stem);
          parent.elements.set(jsonName, info);
          json.push(jsonName);
          if (primitives.has(t) || t === 'xhtml') {
            parent.elements.set(`_${jsonName}`, { type: 'Element' });
            json.push(`_${jsonName}`);
          }
        }
      }
      if ((el.min ?? 0) >= 1) parent.required.push({ name: stem, json });
    }
  }
  for (const f of fixups) f();
  // complex data types: resolve each ElementInfo's node by its type
  const resolveTypes = (n: TypeNode, seen: Set<TypeNode>): void => {
    if (seen.has(n)) return;
    seen.add(n);
    for (const info of n.elements.values()) {
      if (!info.node && !primitives.has(info.type)) info.node = nodes.get(info.type);
      if (info.node) resolveTypes(info.node, seen);
    }
  };
  const seen = new Set<TypeNode>();
  for (const n of nodes.values()) resolveTypes(n, seen);
  const allNodes = new Map<string, TypeNode>();
  for (const n of seen) allNodes.set(n.path, n);
  return { nodes, allNodes, domainResources, humans };
});

function loadModel(): Model {
  if (model) return model;
  const { nodes, allNodes, domainResources, humans } = baseModel.get();
  // invariants: human text from the definitions; attach each to the node of its context
  for (const inv of INVARIANTS) {
    const human = humans.get(inv.key);
    if (!human) throw new Error(`invariant ${inv.key} is not in the R4 StructureDefinitions`);
    inv.human = human;
  }
  for (const inv of INVARIANTS) {
    if (inv.context === 'DomainResource' || inv.context === 'Element') continue;
    const n = allNodes.get(inv.context);
    if (!n) throw new Error(`invariant ${inv.key}: no element ${inv.context} in the R4 definitions`);
    n.invariants.push(inv);
  }
  model = {
    nodes,
    domainResources,
    domInvariants: INVARIANTS.filter((i) => i.context === 'DomainResource'),
    elementInvariants: INVARIANTS.filter((i) => i.context === 'Element'),
  };
  return model;
}

/** The invariants in force, each with its constraint key, where it applies and the StructureDefinition's human text. */
export function invariantTable(): { key: string; context: string; human: string }[] {
  loadModel();
  return INVARIANTS.map(({ key, context, human }) => ({ key, context, human }));
}

function report(ctx: WalkContext, inv: Invariant, where: At, result: boolean | string[]): void {
  if (result === true) return;
  const at = pathText(where);
  const paths = result === false ? [at] : result.map((p) => (p ? `${at}.${p}` : at));
  for (const where of paths) ctx.issues.push(issue({ category: 'invalid', text: `${inv.key}: ${inv.human}`, where }));
}

const URI_TYPES = new Set(['uri', 'url', 'canonical']);

/** One pass over an object of a known type: cardinality, choices, invariants, nested resources; then its children. */
function walk(obj: Obj, node: TypeNode, at: At, ctx: WalkContext, m: Model, isElement: boolean): void {
  for (const req of node.required) {
    let present = false;
    for (const j of req.json) if (obj[j] !== undefined) present = true;
    if (!present) {
      const where = `${pathText(at)}.${req.name}`;
      ctx.issues.push(issue({ category: 'invalid', text: `${where}: missing required element (min 1)`, where }));
    }
  }
  for (const inv of node.invariants) report(ctx, inv, at, inv.check(obj, ctx));
  let stems: Map<string, string> | undefined;
  let children = false;
  for (const key in obj) {
    if (key !== 'id') children = true;
    const info = node.elements.get(key);
    if (!info) continue; // unknown elements are the schema's to report
    const value = obj[key];
    if (info.choiceStem) {
      stems ??= new Map();
      const other = stems.get(info.choiceStem);
      if (other !== undefined) {
        const where = `${pathText(at)}.${key}`;
        ctx.issues.push(issue({ category: 'invalid', text: `${where}: ${info.choiceStem}[x] has one value, but ${other} and ${key} are both present`, where }));
      } else stems.set(info.choiceStem, key);
    }
    if (info.binding) {
      const { codes, valueSet } = info.binding;
      const list = Array.isArray(value) ? value : [value];
      for (let i = 0; i < list.length; i++) {
        if (typeof list[i] !== 'string' || codes.has(list[i] as string)) continue;
        const where = Array.isArray(value) ? `${pathText(at)}.${key}[${i}]` : `${pathText(at)}.${key}`;
        const all = [...codes];
        const text = `${where}: ${JSON.stringify(list[i])} is not in the required value set ${valueSet}; expected one of ${all.slice(0, 10).join(' | ')}${all.length > 10 ? ` | … (${all.length} codes)` : ''}`;
        ctx.issues.push(issue({ category: 'invalid', text, where }));
      }
      continue;
    }
    if (URI_TYPES.has(info.type) || (key === 'reference' && node.path === 'Reference')) {
      for (const u of Array.isArray(value) ? value : [value]) {
        if (typeof u === 'string' && u.startsWith('#')) {
          ctx.localRefs.add(u);
          if (u === '#' && ctx.inContained) ctx.refersToContainer.add(ctx.inContained);
        }
      }
      continue;
    }
    if (info.type === 'Resource') {
      const nested = key === 'contained';
      if (Array.isArray(value)) value.forEach((r, i) => nestedResource(r, `${pathText(at)}.${key}[${i}]`, ctx, nested));
      else nestedResource(value, `${pathText(at)}.${key}`, ctx, nested);
      continue;
    }
    const child = info.node;
    if (!child || value === null || typeof value !== 'object') continue;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const v = value[i];
        if (v && typeof v === 'object' && !Array.isArray(v)) walk(v as Obj, child, { up: at, key, index: i }, ctx, m, true);
      }
    } else walk(value as Obj, child, { up: at, key }, ctx, m, true);
  }
  // ele-1 (hasValue() or children), inlined: it is checked on every element
  if (isElement && !children) for (const inv of m.elementInvariants) report(ctx, inv, at, false);
}

function nestedResource(r: unknown, at: string, ctx: WalkContext, contained: boolean): void {
  if (contained && r && typeof r === 'object') {
    // a contained resource shares its container's %rootResource
    const inner = validateInner(r, at, { ...ctx, inContained: r as Obj, issues: [] });
    ctx.issues.push(...inner);
  } else ctx.issues.push(...validateResource(r, at));
}

function validateInner(resource: unknown, at: string, ctx: WalkContext): OperationOutcomeIssue[] {
  if (!resource || typeof resource !== 'object' || Array.isArray(resource)) {
    return [issue({ category: 'structure', text: `${at}: a resource must be a JSON object`, where: at })];
  }
  const type = (resource as Obj).resourceType;
  if (typeof type !== 'string' || !isResourceType(type)) {
    const where = at === 'Resource' ? 'resourceType' : `${at}.resourceType`;
    return [issue({ category: 'invalid', text: `${where}: ${JSON.stringify(type ?? null)} is not a FHIR R4 resource type`, where })];
  }
  const base = at === 'Resource' ? type : at;
  const r = resource as Obj;
  const v = validatorFor(type);
  const issues = ctx.issues;
  const schema = v(r) ? [] : schemaIssues(base, r, v.errors ?? []);
  const m = loadModel();
  const start = issues.length;
  walk(r, m.nodes.get(type)!, base, ctx, m, false);
  if (m.domainResources.has(type) && !ctx.inContained) for (const inv of m.domInvariants) report(ctx, inv, base, inv.check(r, ctx));
  // one message per place: where the schema has said what is wrong (a missing element, an object where an array
  // belongs), the StructureDefinition layer's view of the same element adds nothing
  if (schema.length) {
    const reported = new Set(schema.flatMap((i) => i.expression ?? []));
    const mine = issues.splice(start).filter((i) => !reported.has(i.expression![0]));
    issues.push(...schema, ...mine);
  }
  return issues;
}

/**
 * Every problem with a resource (error issues; an empty list means valid), each with the FHIRPath of the element.
 * `base` names where the resource sits in a larger document (`Bundle.entry[3].resource`); by default its type.
 */
export function validateResource(resource: unknown, base?: string): OperationOutcomeIssue[] {
  const r = resource as Obj;
  const contained = r && typeof r === 'object' && Array.isArray(r.contained) ? (r.contained as Obj[]) : [];
  const ctx: WalkContext = {
    root: r,
    containedIds: new Set(contained.map((c) => (c && typeof c === 'object' ? String(c.id) : ''))),
    localRefs: new Set(),
    refersToContainer: new Set(),
    issues: [],
  };
  return validateInner(resource, base ?? 'Resource', ctx);
}

/** Throws one OutcomeError (category `invalid`) carrying every issue when the resource has error issues. */
export function assertValid(resource: unknown): void {
  const issues = validateResource(resource);
  if (hasErrors(issues)) throw OutcomeError.fromIssues('invalid', issues);
}

/**
 * Loads the definitions and compiles the validators of the given types now rather than on first use
 * (at startup, or to measure the cost). Returns milliseconds spent.
 */
export function prepareValidation(...types: string[]): number {
  const t0 = performance.now();
  loadModel();
  if (!hasPrecompiledValidators()) schemaAjv();
  for (const t of types) validatorFor(t);
  return performance.now() - t0;
}
