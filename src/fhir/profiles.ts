/**
 * The project's FHIR profiles (profiles/): authored as differentials in profiles/src/, published with snapshots
 * generated here from the differential and the base R4 StructureDefinition (`npm run profiles` writes
 * profiles/StructureDefinition-*.json; a test regenerates and compares). The published CodeSystems and
 * ValueSets sit beside them.
 *
 * Validation against a profile checks what the differential constrains: cardinality (min/max, per parent
 * element), fixed and pattern values, identifier/extension slices (by pattern system or fixed url, with their
 * cardinality), and required bindings to the project's own ValueSets (membership from its CodeSystems).
 *
 * @see https://hl7.org/fhir/R4/profiling.html, https://hl7.org/fhir/R4/elementdefinition.html
 */
import fs from 'node:fs';
import path from 'node:path';
import type { CodeSystem, ElementDefinition, OperationOutcomeIssue, Resource, StructureDefinition, ValueSet } from '@medplum/fhirtypes';
import { readDefinitions } from './definitions.js';
import { pathText, type At } from './outcome.js';
import { profilesDir } from '../paths.js';

export const PROFILE_BASE = 'https://care-gateway.ee/fhir/StructureDefinition/';

function baseDefinition(url: string): StructureDefinition {
  for (const file of ['profiles-resources.json', 'profiles-types.json']) {
    const hit = readDefinitions<{ entry: { resource: StructureDefinition }[] }>(file, { full: true }).entry.find((e) => e.resource.url === url);
    if (hit) return hit.resource;
  }
  throw new Error(`base definition ${url} not found in the R4 definitions`);
}

const CONSTRAINT_KEYS = /^(min|max|short|definition|comment|mustSupport|binding|type|slicing|fixed[A-Z]\w*|pattern[A-Z]\w*|maxLength|constraint)$/;

/**
 * Snapshot = the base snapshot with each differential element merged onto the element of the same path; a slice
 * (sliceName) is inserted after its base element and earlier slices, starting from the base element's definition.
 */
export function generateSnapshot(diff: StructureDefinition): StructureDefinition {
  const base = baseDefinition(diff.baseDefinition!);
  const elements: ElementDefinition[] = base.snapshot!.element.map((e) => structuredClone(e));
  for (const d of diff.differential?.element ?? []) {
    const merge = (target: ElementDefinition): void => {
      for (const [k, v] of Object.entries(d)) if (CONSTRAINT_KEYS.test(k)) (target as unknown as Record<string, unknown>)[k] = structuredClone(v);
    };
    unfold(elements, d.path);
    if (!d.sliceName) {
      const target = elements.find((e) => e.id === d.id || (e.path === d.path && !e.sliceName));
      if (!target) throw new Error(`${diff.url}: differential element ${d.id} has no base element`);
      merge(target);
      continue;
    }
    const at = elements.findIndex((e) => e.path === d.path && !e.sliceName);
    if (at < 0) throw new Error(`${diff.url}: slice ${d.id} has no base element ${d.path}`);
    let insert = at + 1;
    // after the base element's own children and the earlier slices of it
    while (insert < elements.length && (elements[insert].path.startsWith(d.path + '.') || (elements[insert].path === d.path && elements[insert].sliceName))) insert++;
    const slice = structuredClone(elements[at]);
    delete slice.slicing;
    slice.id = d.id;
    slice.sliceName = d.sliceName;
    merge(slice);
    elements.splice(insert, 0, slice);
  }
  // ids of elements under a sliced parent keep the base ids (no re-rooting needed for the element depth used here)
  const { text: _t, ...rest } = diff as StructureDefinition & { text?: unknown };
  return { ...rest, snapshot: { element: elements } };
}

/**
 * A differential that constrains inside a complex datatype (`Patient.address.extension`) needs that datatype's
 * elements in the snapshot: they are copied from the datatype's definition, re-rooted under the element.
 */
function unfold(elements: ElementDefinition[], path: string): void {
  const steps = path.split('.');
  for (let n = 2; n < steps.length; n++) {
    const parentPath = steps.slice(0, n).join('.');
    const childPath = steps.slice(0, n + 1).join('.');
    if (elements.some((e) => e.path === childPath)) continue;
    const at = elements.findIndex((e) => e.path === parentPath && !e.sliceName);
    const type = at >= 0 ? elements[at].type : undefined;
    if (!type || type.length !== 1 || !/^[A-Z]/.test(type[0].code)) return;
    const dt = baseDefinition(`http://hl7.org/fhir/StructureDefinition/${type[0].code}`);
    const kids = dt.snapshot!.element.slice(1).map((e) => {
      const c = structuredClone(e);
      c.path = parentPath + c.path.slice(type[0].code.length);
      c.id = (elements[at].id ?? parentPath) + c.id!.slice(type[0].code.length);
      return c;
    });
    let insert = at + 1;
    while (insert < elements.length && elements[insert].path.startsWith(parentPath + '.')) insert++;
    elements.splice(insert, 0, ...kids);
  }
}

/** The differentials in profiles/src, with their published file names. */
export function profileSources(): { file: string; sd: StructureDefinition }[] {
  const dir = path.join(profilesDir(), 'src');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ file: path.join(profilesDir(), f), sd: JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as StructureDefinition }));
}

/** Writes the published profiles (snapshot + differential). */
export function buildProfiles(): string[] {
  return profileSources().map(({ file, sd }) => {
    fs.writeFileSync(file, JSON.stringify(generateSnapshot(sd), null, 2) + '\n');
    return file;
  });
}

let published: Resource[] | undefined;
/** Every conformance resource in profiles/ (StructureDefinitions, CodeSystems, ValueSets), as published. */
export function conformanceResources(): Resource[] {
  published ??= fs
    .readdirSync(profilesDir())
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(profilesDir(), f), 'utf8')) as Resource);
  return published;
}

interface Compiled {
  url: string;
  type: string;
  checks: ((r: Resource, issues: OperationOutcomeIssue[]) => void)[];
}
let compiled: Map<string, Compiled> | undefined;

function profiles(): Map<string, Compiled> {
  if (compiled) return compiled;
  compiled = new Map();
  const res = conformanceResources();
  const codes = new Map<string, Set<string>>(); // ValueSet url → codes (system|code)
  for (const vs of res.filter((r): r is ValueSet => r.resourceType === 'ValueSet')) {
    const set = new Set<string>();
    for (const inc of vs.compose?.include ?? []) {
      const cs = res.find((r): r is CodeSystem => r.resourceType === 'CodeSystem' && r.url === inc.system);
      for (const c of inc.concept ?? cs?.concept ?? []) set.add(`${inc.system}|${c.code}`);
    }
    codes.set(vs.url!, set);
  }
  for (const sd of res.filter((r): r is StructureDefinition => r.resourceType === 'StructureDefinition' && r.kind === 'resource')) {
    const diffIds = new Set((sd.differential?.element ?? []).map((e) => e.id));
    const checks = (sd.snapshot?.element ?? []).filter((e) => diffIds.has(e.id) && e.path.includes('.')).map((e) => compileElement(sd, e, codes));
    compiled.set(sd.url!, { url: sd.url!, type: sd.type!, checks });
  }
  return compiled;
}

/** A node of a resource and where it is (spelled out only for an issue). */
type Node = { value: unknown; at: At };

/** The nodes at an element path's steps (`['activity', 'detail']` of `CarePlan.activity.detail`) below the root. */
function select(root: Resource, steps: string[]): Node[] {
  let nodes: Node[] = [{ value: root, at: root.resourceType }];
  for (const s of steps) {
    const next: Node[] = [];
    for (const n of nodes) children(n, s, next);
    nodes = next;
  }
  return nodes;
}

function children(n: Node, name: string, out: Node[] = []): Node[] {
  if (!n.value || typeof n.value !== 'object') return out;
  const o = n.value as Record<string, unknown>;
  const keys = name.endsWith('[x]') ? Object.keys(o).filter((k) => k.startsWith(name.slice(0, -3)) && /^[A-Z]/.test(k.slice(name.length - 3))) : [name];
  for (const k of keys) {
    const v = o[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (let i = 0; i < v.length; i++) out.push({ value: v[i], at: { up: n.at, key: k, index: i } });
    else out.push({ value: v, at: { up: n.at, key: k } });
  }
  return out;
}

/** FHIR pattern matching: every property of the pattern is in the value (arrays: each pattern item matches some item). */
export function matchesPattern(value: unknown, pattern: unknown): boolean {
  if (pattern === null || typeof pattern !== 'object') return value === pattern;
  if (Array.isArray(pattern)) return Array.isArray(value) && pattern.every((p) => value.some((v) => matchesPattern(v, p)));
  if (!value || typeof value !== 'object') return false;
  return Object.entries(pattern).every(([k, p]) => matchesPattern((value as Record<string, unknown>)[k], p));
}

function valueOf(e: ElementDefinition, prefix: 'fixed' | 'pattern'): [string, unknown] | undefined {
  const k = Object.keys(e).find((x) => x.startsWith(prefix) && /^[A-Z]/.test(x.slice(prefix.length)));
  return k ? [k, (e as unknown as Record<string, unknown>)[k]] : undefined;
}

function compileElement(sd: StructureDefinition, e: ElementDefinition, codes: Map<string, Set<string>>): Compiled['checks'][number] {
  const name = sd.name ?? sd.url;
  const fixed = valueOf(e, 'fixed');
  const pattern = valueOf(e, 'pattern');
  const min = e.min ?? 0;
  const max = e.max === '*' || e.max === undefined ? Infinity : Number(e.max);
  const binding = e.binding?.strength === 'required' && e.binding.valueSet ? codes.get(e.binding.valueSet) : undefined;
  const sliceTest = e.sliceName ? (pattern ? (v: unknown) => matchesPattern(v, pattern[1]) : (v: unknown) => (v as { url?: string })?.url === e.type?.[0]?.profile?.[0]) : undefined;
  const label = e.sliceName ? `${e.path}:${e.sliceName}` : e.path;
  const err = (issues: OperationOutcomeIssue[], where: string, text: string, code: OperationOutcomeIssue['code'] = 'invariant') =>
    issues.push({ severity: 'error', code, diagnostics: `${text} (profile ${name})`, expression: [where] });
  const steps = e.path.split('.').slice(1);
  const last = steps.pop()!;
  const fixedJson = fixed ? JSON.stringify(fixed[1]) : undefined;
  return (r, issues) => {
    for (const parent of select(r, steps)) {
      let vs = children(parent, last);
      if (sliceTest) vs = vs.filter((v) => sliceTest(v.value));
      if (vs.length < min) err(issues, `${pathText(parent.at)}.${last.replace('[x]', '')}`, `${label} is required (min ${min}), found ${vs.length}`, 'required');
      if (vs.length > max) err(issues, pathText(vs[max].at), max === 0 ? `${label} is not used in this profile` : `${label} allows at most ${max}, found ${vs.length}`, 'structure');
      for (const v of vs) {
        if (fixedJson !== undefined && JSON.stringify(v.value) !== fixedJson) err(issues, pathText(v.at), `${label} must be ${fixedJson}`, 'value');
        if (pattern && !sliceTest && !matchesPattern(v.value, pattern[1])) err(issues, pathText(v.at), `${label} must match ${JSON.stringify(pattern[1])}`, 'value');
        if (binding) {
          const cc = v.value as { coding?: { system?: string; code?: string }[] };
          if (!(cc.coding ?? []).some((c) => binding.has(`${c.system}|${c.code}`))) err(issues, pathText(v.at), `${label} must have a code from ${e.binding!.valueSet}`, 'code-invalid');
        }
      }
    }
  };
}

/** Issues of a resource against the project profiles it claims in meta.profile (unknown profiles are ignored). */
export function validateProfiles(r: Resource, extra: string[] = []): OperationOutcomeIssue[] {
  const claimed = [...(r.meta?.profile ?? []), ...extra].filter((p) => p.startsWith(PROFILE_BASE));
  if (claimed.length === 0) return [];
  const issues: OperationOutcomeIssue[] = [];
  const known = profiles();
  for (const url of claimed) {
    const p = known.get(url.split('|')[0]);
    if (!p) {
      issues.push({ severity: 'error', code: 'not-found', diagnostics: `profile ${url} is not one of care-gateway's profiles`, expression: [`${r.resourceType}.meta.profile`] });
      continue;
    }
    if (p.type !== r.resourceType) {
      issues.push({ severity: 'error', code: 'invalid', diagnostics: `profile ${url} is for ${p.type}, not ${r.resourceType}`, expression: [`${r.resourceType}.meta.profile`] });
      continue;
    }
    for (const check of p.checks) check(r, issues);
  }
  return issues;
}

export function profileUrls(): string[] {
  return [...profiles().keys()];
}
