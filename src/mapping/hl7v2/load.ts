/**
 * Loading the HL7 v2 mapping files once and compiling each element rule into a closure over pre-parsed locations and a
 * pre-chosen converter: unknown keys and bad locations fail at load, naming the file and element.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Coding } from '@medplum/fhirtypes';
import { issue } from '../../fhir/outcome.js';
import type { Hl7Repetition } from '../../hl7v2/message.js';
import { mappingsDir } from '../../paths.js';
import { readDataFile } from '../../data-file.js';
import { loadCodeTables } from '../codes.js';
import { comp, cwe, cx, dtm, ndlParts, plParts, present, setCodingSystems, xad, xcnParts, xonParts, xpn, xtn } from '../datatypes.js';
import { parseLoc, read, reps, setPath, type CommonFile, type Compiled, type CompiledElement, type CompiledRule, type Condition, type Ctx, type ElementSpec, type Loc, type MessageFile, type ResourceFile, type Scope } from './language.js';
import { locationRef, organizationRef, practitionerRef } from './ids.js';
import { documentBody, observationValue, providerRefs } from './special.js';

const compiledCache = new Map<string, Compiled>();
/** A site's own HL7 v2 mappings (HL7_MAPPINGS_DIR), searched before the project's. */
let siteDir: string | undefined;

/**
 * HL7_MAPPINGS_DIR: a folder with `messages/`, `resources/` and `codes/` (each optional) laid out as
 * mappings/hl7v2/ and mappings/codes/. A file there replaces the project's file of the same name (a message
 * structure, a resource rule, a value set); a new name adds one — a Z-segment rule, a trigger the project does not
 * route. Checked and compiled at once: a broken file stops the start.
 */
export function setHl7MappingsDir(dir: string | undefined): void {
  if (dir && !fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`HL7_MAPPINGS_DIR=${dir}: no such folder`);
  siteDir = dir;
  loadMappings();
}

/**
 * Loads and checks every mapping file once: each against its JSON Schema (mappings/schema/), then the references
 * between files (a route names a rule that exists). A broken file fails at start, naming file, line and path.
 */
export function loadMappings(dir = mappingsDir(), site = dir === mappingsDir() ? siteDir : undefined): Compiled {
  const cacheKey = `${dir}\u0000${site ?? ''}`;
  const hit = compiledCache.get(cacheKey);
  if (hit) return hit;
  /** the YAML files of one kind: the project's, then the site's */
  const filesOf = (sub: string): { file: string; label: string; name: string; site: boolean }[] =>
    [[path.join(dir, 'hl7v2', sub), `mappings/hl7v2/${sub}`, false] as const, ...(site ? [[path.join(site, sub), `${site}/${sub}`, true] as const] : [])].flatMap(([folder, shown, isSite]) =>
      fs.existsSync(folder)
        ? fs
            .readdirSync(folder)
            .filter((x) => x.endsWith('.yaml'))
            .sort()
            .map((f) => ({ file: path.join(folder, f), label: `${shown}/${f}`, name: path.basename(f, '.yaml'), site: isSite }))
        : [],
    );
  // a site's message file adds to the project's of the same structure: its events (by trigger) and its routes
  const messages = new Map<string, MessageFile>();
  for (const { file, label } of filesOf('messages')) {
    const m = readDataFile<MessageFile>(file, 'hl7v2-message', label);
    const before = messages.get(m.structure);
    messages.set(m.structure, before ? { structure: m.structure, events: { ...before.events, ...m.events }, resources: [...before.resources, ...m.resources], leaves: { ...before.leaves, ...m.leaves } } : m);
  }
  // a site's resource rule replaces the project's of the same name
  const rules = new Map<string, CompiledRule>();
  for (const { file, label, name } of filesOf('resources')) {
    const r = readDataFile<ResourceFile>(file, 'hl7v2-resource', label);
    const used = new Map<string, Set<number>>();
    const mark = (loc: string | undefined): void => {
      if (!loc) return;
      const l = parseLoc(loc);
      if (!used.has(l.segment)) used.set(l.segment, new Set());
      used.get(l.segment)!.add(l.field);
    };
    const compiledElements: CompiledElement[] = [];
    for (const [target, specs] of Object.entries(r.elements ?? {})) {
      for (const s of Array.isArray(specs) ? specs : [specs]) {
        const markSpec = (x: ElementSpec): void => {
          for (const k of ['from', 'fallback', 'valueType', 'unit', 'components', 'contentType'] as const) mark(x[k]);
          if (x.when) conditionFields(x.when).forEach(mark);
          for (const sub of Object.values(x.fields ?? {})) [sub].flat().forEach(markSpec);
        };
        markSpec(s);
        try {
          compiledElements.push(compileElement(target, s));
        } catch (err) {
          throw new Error(`${label}: elements.${target}: ${(err as Error).message}`);
        }
      }
    }
    for (const k of r.id?.key ?? []) k.split('|').forEach(mark);
    if (r.part && compiledElements.some((e) => e.late || e.choice)) throw new Error(`${label}: a part cannot hold references to other resources or value[x]`);
    if (r.role) for (const k of [r.role.from, r.role.member, r.role.start, r.role.end]) mark(k);
    rules.set(name, { ...r, used, compiled: compiledElements });
  }
  for (const m of messages.values()) {
    for (const [i, r] of m.resources.entries()) if (!rules.has(r.rule)) throw new Error(`messages/${m.structure}.yaml: resources.${i}.rule: no resource rule "${r.rule}" (known: ${[...rules.keys()].join(', ')})`);
  }
  const common = readDataFile<CommonFile>(path.join(dir, 'hl7v2', 'common.yaml'), 'hl7v2-common', 'mappings/hl7v2/common.yaml');
  setCodingSystems(common.codingSystems);
  const fac = readDataFile<{ facilities: Record<string, { registryCode: string; name?: string; charset?: string }> }>(path.join(dir, 'facilities.yaml'), 'facilities', 'mappings/facilities.yaml');
  const facilities = new Map(Object.entries(fac.facilities ?? {}).map(([k, v]) => [k.toUpperCase(), v]));
  const c: Compiled = { common, messages, rules, codes: loadCodeTables(path.join(dir, 'codes'), ...(site ? [path.join(site, 'codes')] : [])), facilities };
  compiledCache.set(cacheKey, c);
  return c;
}

/** The character set a sending facility uses when it leaves MSH-18 empty (`charset` in mappings/facilities.yaml). */
export function facilityCharset(facility: string): string | undefined {
  return loadMappings().facilities.get(facility.trim().toUpperCase())?.charset;
}


/** Compiles one element rule of a resource file into a closure; unknown keys and bad locations fail at load. */
function compileElement(target: string, spec: ElementSpec): CompiledElement {
  const when = spec.when ? compileCondition(spec.when) : undefined;
  const guard = (run: CompiledElement['run']): CompiledElement['run'] =>
    when
      ? (sc, c, b, self) => {
          if (when(sc)) return run(sc, c, b, self);
          conditionWarnings(spec.when!, sc, c, `not read into ${target.replace(/\[\]/g, '')}`);
          return [];
        }
      : run;
  const wrap = (v: unknown): unknown => {
    if (spec.wrapText) v = [{ text: v }];
    return spec.into ? { ...(spec.add ?? {}), [spec.into]: v } : spec.add && typeof v === 'object' && v ? { ...(v as object), ...spec.add } : v;
  };
  const base = { target, late: false, unless: spec.unless };
  if (spec.each) return compileEach(target, spec, wrap);
  if (spec.value !== undefined) return { ...base, run: guard(() => [structuredClone(spec.value)]) };
  if (spec.valueType) {
    parseLoc(spec.valueType);
    if (spec.components) parseLoc(spec.components);
    return { ...base, choice: (scope, ctx) => (when && !when(scope) ? ['value', undefined] : observationValue(spec, scope, ctx)), run: () => [] };
  }
  if (spec['ref-to'] || spec['refs-to']) {
    const type = (spec['ref-to'] ?? spec['refs-to'])!;
    const many = !!spec['refs-to'];
    return {
      ...base,
      late: true,
      run: guard((scope, ctx, built, self) => {
        if (type === 'Organization' && !spec.segment) {
          const org = ctx.produced.find((r) => r.resourceType === 'Organization' && r.id === ctx.senderId);
          return org ? [wrap({ reference: `Organization/${org.id}` })] : [];
        }
        const inGroup = new Set(scope.group.map((s) => s.index));
        const candidates = built.filter(
          (b) => b.resource.resourceType === type && b.resource !== self && (!spec.segment || b.segment.name === spec.segment) && (!spec.group || inGroup.has(b.segment.index)),
        );
        if (many) return candidates.map((b) => wrap({ reference: `${type}/${b.resource.id}` }));
        // one reference: the nearest such resource before this segment, else the first one
        const before = candidates.filter((b) => b.segment.index <= scope.seg.index).pop() ?? candidates[0];
        return before ? [wrap({ reference: `${type}/${before.resource.id}` })] : [];
      }),
    };
  }
  if (spec.provider) return { ...base, run: guard((scope, ctx) => providerRefs(spec.provider!, scope, ctx).map(wrap)) };
  if (spec.document) return { ...base, run: guard((scope, ctx) => documentBody(scope, spec, ctx).map(wrap)) };
  if (!spec.from) throw new Error('needs one of from, value, valueType, ref-to, refs-to, provider, document');
  const loc = parseLoc(spec.from);
  const fallback = spec.fallback ? parseLoc(spec.fallback) : undefined;
  if (spec.present !== undefined) return { ...base, run: guard((scope) => [present(read(scope, loc)) ? spec.present : spec.else]) };
  if (spec.equals !== undefined) return { ...base, run: guard((scope) => (read(scope, loc) === spec.equals ? [structuredClone(spec.then)] : [])) };
  const one = compileConverter(spec);
  if (spec.join !== undefined && !spec.all) throw new Error('join needs all');
  const convert = (scope: Scope, l: Loc, ctx: Ctx): unknown[] => {
    // `all` over a companion that repeats (NTE after OBX) reads every one of them
    const all = spec.all && scope.seg.name !== l.segment ? scope.withSegs.filter((s) => s.name === l.segment).flatMap((s) => s.fields[l.field] ?? []) : reps(scope, l);
    const out: unknown[] = [];
    for (const rep of spec.all ? all : all.slice(0, 1)) {
      const v = one(rep, (rep?.[(l.component ?? 1) - 1]?.[(l.sub ?? 1) - 1] ?? '').trim(), l, ctx);
      if (v !== undefined) out.push(v);
    }
    return out;
  };
  return {
    ...base,
    run: guard((scope, ctx) => {
      let v = convert(scope, loc, ctx);
      if (!v.length && fallback) v = convert(scope, fallback, ctx);
      if (!v.length && spec.default !== undefined) return [structuredClone(spec.default)];
      if (spec.join !== undefined && v.length) v = [v.join(spec.join)];
      return v.map(wrap);
    }),
  };
}

const compiledConditions = new WeakMap<object, (scope: Scope) => boolean>();

/**
 * `each: NTE`: per companion segment of that name (each NTE after an OBX), read in that segment alone, `when` tested on
 * each — with `fields`, one object of those elements per segment; without, the rule's own value (`from` …) per segment.
 */
function compileEach(target: string, spec: ElementSpec, wrap: (v: unknown) => unknown): CompiledElement {
  const name = spec.each!;
  const own = !spec.fields;
  const fields = own
    ? [compileElement(target, { ...spec, each: undefined, when: undefined })]
    : Object.entries(spec.fields ?? {}).flatMap(([t, s]) => [s].flat().map((x) => compileElement(t, x)));
  if (!fields.length) throw new Error('each needs fields or a value of its own');
  if (fields.some((f) => f.late || f.choice)) throw new Error('each cannot hold references to other resources or value[x]');
  const when = spec.when ? compileCondition(spec.when) : undefined;
  return {
    target,
    late: false,
    run: (scope, ctx, built) => {
      const segs = scope.seg.name === name ? [scope.seg] : scope.withSegs.filter((s) => s.name === name);
      const out: unknown[] = [];
      for (const seg of segs) {
        const one: Scope = { ...scope, seg, withSegs: [] };
        if (when && !when(one)) {
          conditionWarnings(spec.when!, one, ctx, `not read into ${target.replace(/\[\]/g, '')}`);
          continue;
        }
        if (own) {
          out.push(...fields[0].run(one, ctx, built)); // wrapped (`into`, `add`) by the rule itself
          continue;
        }
        const obj: Record<string, unknown> = {};
        for (const f of fields) for (const v of f.run(one, ctx, built)) setPath(obj, f.target, v);
        if (Object.keys(obj).length) out.push(wrap(obj));
      }
      return out;
    },
  };
}

/** A condition compiled to a test on the scope (once per condition object of the loaded files). */
export function compileCondition(c: Condition | Condition[]): (scope: Scope) => boolean {
  let test = compiledConditions.get(c);
  if (!test) {
    test = compileConditionUncached(c);
    compiledConditions.set(c, test);
  }
  return test;
}

function compileConditionUncached(c: Condition | Condition[]): (scope: Scope) => boolean {
  if (Array.isArray(c)) {
    const all = c.map(compileCondition); // a list: every condition holds
    return (scope) => all.every((t) => t(scope));
  }
  if (c.any) {
    const alternatives = c.any.map(compileCondition); // `any`: one of them holds
    return (scope) => alternatives.some((t) => t(scope));
  }
  if (!c.field) throw new Error('a condition needs field or any');
  const loc = parseLoc(c.field);
  // codes compare case-insensitively: senders write SEL, Sel and sel alike
  const inSet = c.in ? new Set(c.in.map((x) => String(x).toUpperCase())) : undefined;
  const notSet = c.not ? new Set(c.not.map((x) => String(x).toUpperCase())) : undefined;
  return (scope) => {
    const v = read(scope, loc).toUpperCase();
    if (c.present !== undefined && present(v) !== c.present) return false;
    if (inSet && !inSet.has(v)) return false;
    if (notSet && notSet.has(v)) return false;
    return true;
  };
}

/**
 * The warnings a failed condition owes: each part marked `otherwise: warn` whose field holds a value the part does not
 * accept (a value it was not asked about is no reason to skip silently). Reported once per conversion and field value.
 */
export function conditionWarnings(c: Condition | Condition[], scope: Scope, ctx: Ctx, what: string): string[] {
  const fields: string[] = [];
  for (const x of [c].flat()) {
    if (x.any) {
      fields.push(...conditionWarnings(x.any, scope, ctx, what));
      continue;
    }
    if (x.otherwise !== 'warn' || !x.field) continue;
    const v = read(scope, parseLoc(x.field));
    if (!present(v) || compileCondition(x)(scope)) continue;
    fields.push(x.field);
    const text = `${x.field}: "${v}" is not ${x.in ? `one of ${x.in.join(', ')}` : 'a value this mapping reads'}; ${what}`;
    ctx.warned ??= new Set();
    if (ctx.warned.has(text)) continue;
    ctx.warned.add(text);
    ctx.issues.push(issue({ severity: 'warning', text, where: x.field }));
  }
  return fields;
}

/** Every location a condition reads (for the fields a rule uses). */
export function conditionFields(c: Condition | Condition[]): string[] {
  return [c].flat().flatMap((x) => (x.any ? conditionFields(x.any) : x.field ? [x.field] : []));
}

/** The datatypes an element rule's `type` may name (mappings/schema/hl7v2-resource.schema.json lists the same). */
export const CONVERTER_TYPES = ['string', 'integer', 'decimal', 'boolean', 'date', 'dateTime', 'instant', 'CX', 'XPN', 'XAD', 'XTN', 'CWE', 'XCN', 'XON', 'PL', 'positiveInt', 'NDL'] as const;

type Converter = (rep: Hl7Repetition | undefined, text: string, loc: Loc, ctx: Ctx) => unknown;

/** The converter for one value, chosen once from the rule's `type` / `table`. */
function compileConverter(spec: ElementSpec): Converter {
  /** a person, organisation or place: with `ref` naming its type, a resource of its own and a reference; else its name */
  const entity =
    <P extends { name?: unknown }>(parts: (rep: Hl7Repetition | undefined, ctx: Ctx) => P | undefined, type: ElementSpec['ref'], make: (p: P, ctx: Ctx) => unknown): Converter =>
    (rep, _t, _l, ctx) => {
      const p = parts(rep, ctx);
      return p && spec.ref === type ? make(p, ctx) : p?.name;
    };
  if (spec.table && !spec.type) {
    const as = spec.as ?? 'code';
    return (_rep, text, loc, ctx) => {
      if (!present(text)) return undefined;
      const mapped = ctx.codes.lookup(spec.table!, text);
      const coding = mapped ?? lookupCode(spec.table!, text, loc.text, ctx);
      // an unmapped code cannot fill a `code` element (it would not be valid FHIR): it is reported and left out
      if (as === 'code') return mapped?.code;
      return as === 'Coding' ? coding : { coding: [coding] };
    };
  }
  const type = spec.type ?? 'string';
  switch (type) {
    case 'string':
      return (_r, text) => (present(text) ? text : undefined);
    case 'integer':
      return (_r, text) => (/^-?\d+$/.test(text) ? Number(text) : undefined);
    case 'positiveInt':
      // FHIR positiveInt: 1 … 2^31-1; a 0 or a count from zero is left out with a warning
      return (_r, text, loc, ctx) => {
        if (!present(text)) return undefined;
        const n = /^\d+$/.test(text) ? Number(text) : NaN;
        if (n >= 1 && n <= 2147483647) return n;
        ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: "${text}" is not a positive whole number; left out`, where: loc.text }));
        return undefined;
      };
    case 'decimal':
      return (_r, text) => (/^-?\d+(\.\d+)?$/.test(text) ? Number(text) : undefined);
    case 'boolean':
      return (_r, text) => (text === 'Y' ? true : text === 'N' ? false : undefined);
    case 'date':
    case 'dateTime':
    case 'instant':
      return (_r, text, loc, ctx) => {
        if (!present(text)) return undefined;
        const v = dtm(text, type);
        if (!v) ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: "${text}" is not an HL7 date/time; left out`, where: loc.text }));
        return v;
      };
    case 'CX':
      return (rep, _t, _l, ctx) => cx(rep, ctx);
    case 'XPN':
      return (rep, _t, _l, ctx) => xpn(rep, ctx);
    case 'XAD':
      return (rep, _t, _l, ctx) => xad(rep, ctx);
    case 'XTN':
      return (rep) => xtn(rep, spec.use as 'home' | 'work' | undefined);
    case 'CWE':
      return (rep, _t, loc, ctx) => {
        const cc = cwe(rep);
        if (!cc || !spec.table) return cc;
        const code = comp(rep, 1);
        const mapped = ctx.codes.lookup(spec.table, code);
        if (mapped) cc.coding = [mapped, ...(cc.coding ?? []).filter((c) => c.code !== mapped.code)];
        else if (present(code)) {
          const src = ctx.codes.sourceSystem(spec.table);
          cc.coding = (cc.coding ?? []).map((c) => (c.system ? c : { ...c, ...(src ? { system: src } : {}) }));
          ctx.issues.push(issue({ severity: 'warning', text: `${loc.text}: code "${code}" has no mapping in mappings/codes (${spec.table}); kept as sent`, where: loc.text }));
        }
        return cc;
      };
    case 'XCN':
      return entity(xcnParts, 'Practitioner', practitionerRef);
    case 'NDL':
      return entity(ndlParts, 'Practitioner', practitionerRef);
    case 'XON':
      return entity(xonParts, 'Organization', organizationRef);
    case 'PL':
      return entity((rep) => plParts(rep), 'Location', locationRef);
    default:
      throw new Error(`unknown type ${type} (known: ${CONVERTER_TYPES.join(', ')})`);
  }
}

function lookupCode(table: string, code: string, where: string, ctx: Ctx): Coding {
  const hit = ctx.codes.lookup(table, code);
  if (hit) return hit;
  ctx.issues.push(issue({ severity: 'warning', text: `${where}: code "${code}" has no mapping in mappings/codes (${table})`, where }));
  const src = ctx.codes.sourceSystem(table);
  return { ...(src ? { system: src } : {}), code };
}

