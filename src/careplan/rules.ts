/**
 * Coordination rules as data (mappings/careplan/rules.yaml), compiled once into predicates.
 * A rule says which event it reacts to, when it applies, and which requests it adds to the shared plan.
 */
import path from 'node:path';
import { mappingsDir } from '../paths.js';
import { readDataFile } from '../data-file.js';
import type { PlanEvent } from '../county/contribution.js';


export type Party = 'general-practitioner' | 'municipality-of-residence' | 'hospital' | 'county-coordinator';

/** What a rule's condition sees about the event. */
export interface RuleFacts {
  dispositionCodes: string[];
  conditionCodes: string[];
  segments: string[];
  flags: string[];
  /** the person died: the Patient says so (deceased), or the visit ended in death (a disposition of the deceased set) */
  deceased: boolean;
}

export interface RuleAction {
  resource: 'ServiceRequest' | 'Task';
  code?: string;
  display?: string;
  displayEt?: string;
  performer?: Party;
  owner?: Party;
  requester?: Party;
  occurrenceWithinDays?: number;
  focus?: number;
}

export interface CompiledRule {
  id: string;
  on: PlanEvent;
  applies(facts: RuleFacts): boolean;
  add: RuleAction[];
}

export interface RuleBook {
  codeSystem: string;
  rules: CompiledRule[];
}

type Cond =
  | { all: Cond[] }
  | { any: Cond[] }
  | { not: Cond }
  | { 'disposition-in': string }
  | { 'condition-in': string }
  | { 'segment-in': string }
  | { flag: string }
  | { deceased: boolean };

interface RuleFile {
  codeSystem: string;
  dispositionMissingMeans?: string;
  sets: Record<string, (string | number)[]>;
  rules: { id: string; on: PlanEvent; if?: Cond; add: RuleAction[] }[];
}

const PARTIES = new Set<Party>(['general-practitioner', 'municipality-of-residence', 'hospital', 'county-coordinator']);

/** Compiles a rule file; throws with the rule id and the problem when the file is wrong. */
export function compileRules(doc: RuleFile): RuleBook {
  const sets = new Map(Object.entries(doc.sets ?? {}).map(([k, v]) => [k, v.map(String)]));
  const set = (name: string, rule: string): string[] => {
    const s = sets.get(name);
    if (!s) throw new Error(`rule ${rule}: unknown set "${name}"`);
    return s;
  };
  const missing = doc.dispositionMissingMeans;
  const compile = (c: Cond, rule: string): ((f: RuleFacts) => boolean) => {
    if ('all' in c) {
      const parts = c.all.map((x) => compile(x, rule));
      return (f) => parts.every((p) => p(f));
    }
    if ('any' in c) {
      const parts = c.any.map((x) => compile(x, rule));
      return (f) => parts.some((p) => p(f));
    }
    if ('not' in c) {
      const inner = compile(c.not, rule);
      return (f) => !inner(f);
    }
    if ('disposition-in' in c) {
      const s = new Set(set(c['disposition-in'], rule));
      return (f) => (f.dispositionCodes.length ? f.dispositionCodes : missing ? [missing] : []).some((d) => s.has(d));
    }
    if ('condition-in' in c) {
      const prefixes = set(c['condition-in'], rule);
      return (f) => f.conditionCodes.some((code) => prefixes.some((p) => code.toUpperCase().startsWith(p.toUpperCase())));
    }
    if ('segment-in' in c) {
      const s = new Set(set(c['segment-in'], rule));
      return (f) => f.segments.some((x) => s.has(x));
    }
    if ('flag' in c) {
      const name = c.flag;
      return (f) => f.flags.includes(name);
    }
    if ('deceased' in c) {
      const want = c.deceased;
      return (f) => f.deceased === want;
    }
    throw new Error(`rule ${rule}: unknown condition ${JSON.stringify(c)}`);
  };
  const rules = (doc.rules ?? []).map((r) => {
    if (!r.id || !r.on) throw new Error(`a rule needs id and on: ${JSON.stringify(r)}`);
    r.add.forEach((a, i) => {
      for (const p of [a.performer, a.owner, a.requester]) if (p && !PARTIES.has(p)) throw new Error(`rule ${r.id}: unknown party "${p}"`);
      if (a.resource !== 'ServiceRequest' && a.resource !== 'Task') throw new Error(`rule ${r.id}: cannot add a ${a.resource}`);
      if (a.focus !== undefined && (a.focus >= i || r.add[a.focus].resource !== 'ServiceRequest')) {
        throw new Error(`rule ${r.id}: focus must name an earlier ServiceRequest entry`);
      }
    });
    return { id: r.id, on: r.on, applies: r.if ? compile(r.if, r.id) : () => true, add: r.add };
  });
  return { codeSystem: doc.codeSystem, rules };
}

let book: RuleBook | undefined;

export function ruleBook(): RuleBook {
  book ??= compileRules(readDataFile<RuleFile>(path.join(mappingsDir(), 'careplan/rules.yaml'), 'careplan-rules', 'mappings/careplan/rules.yaml'));
  return book;
}
