/**
 * The HL7 v2 mapping language: the shapes of the mapping files (mappings/hl7v2/messages/*.yaml routes segments to
 * resource rules, mappings/hl7v2/resources/*.yaml maps fields to elements), what they compile to, and the reading
 * of HL7 locations (`PID-3.1`) within a segment and its companions. The language is described at the top of
 * convert.ts.
 */
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { PlanEvent } from '../../county/contribution.js';
import type { Hl7Message, Hl7Repetition, Hl7Segment } from '../../hl7v2/message.js';
import type { CodeTables } from '../codes.js';
import type { IdentifierContext } from '../datatypes.js';

export interface Loc {
  segment: string;
  field: number;
  component?: number;
  sub?: number;
  text: string;
}

export interface ElementSpec {
  from?: string;
  type?: string;
  table?: string;
  as?: 'code' | 'Coding' | 'CodeableConcept';
  all?: boolean;
  use?: string;
  into?: string;
  add?: Record<string, unknown>;
  default?: unknown;
  fallback?: string;
  ref?: 'Practitioner' | 'Organization' | 'Location';
  value?: unknown;
  'ref-to'?: string;
  'refs-to'?: string;
  group?: boolean;
  present?: unknown;
  else?: unknown;
  equals?: string;
  then?: unknown;
  valueType?: string;
  unit?: string;
  /** with valueType: a repeated value becomes one component per repetition, coded by this location (OBX-3) */
  components?: string;
  document?: string;
  contentType?: string;
  provider?: string;
  wrapText?: boolean;
  /** skip when this element already has a value (choice types like deceased[x]) */
  unless?: string;
  /** with ref-to / refs-to: only resources built from this segment (e.g. `MRG`, `DG1`) */
  segment?: string;
  /** map only when the condition on a location holds */
  when?: Condition | Condition[];
  /** with `all`: the values joined into one string with this separator (NTE-3's lines into one note) */
  join?: string;
  /** one object per companion segment of this name (each NTE), built from `fields` read in that segment */
  each?: string;
  fields?: Record<string, ElementSpec | ElementSpec[]>;
}

/**
 * A condition on the text at an HL7 location: `in` / `not` lists of codes, `present` true/false; or `any`: one of
 * these conditions holds. `otherwise: warn`: when the condition fails because its field holds a value it does not
 * accept (PDA-6 "X" where Y or N is read), the conversion says so as a warning instead of skipping silently.
 */
export interface Condition {
  field?: string;
  in?: string[];
  not?: string[];
  present?: boolean;
  any?: Condition[];
  otherwise?: 'warn';
}

/** One element rule compiled at load: a closure over pre-parsed locations and a pre-chosen converter. */
export interface CompiledElement {
  target: string;
  /** references to other produced resources: evaluated after every resource of the message is built */
  late: boolean;
  unless?: string;
  /** value[x] rules set the element name themselves */
  choice?: (scope: Scope, ctx: Ctx) => [string, unknown];
  run: (scope: Scope, ctx: Ctx, built: Built[], self?: Resource) => unknown[];
}

export interface ResourceFile {
  resourceType: string;
  /**
   * Not a resource of its own but one element of the message's subject (the resourceType built from PID), e.g.
   * `contact[]`: the elements build one object per segment, appended there (NK1 employer rows → Patient.contact).
   */
  part?: string;
  /** other segments of the group this rule reads (PRD for a referral, OBX for a document body) */
  uses?: string[];
  /**
   * `tag`: a fixed word in the id, so two rules of one resource type keyed by the same values make two resources (the
   * cause of death I21 and a diagnosis I21); with neither `key` nor `else`, the rule makes one resource per `scope`
   */
  id?: { recipe?: 'patient'; from?: string; key?: string[]; scope?: 'patient' | 'facility'; else?: string[]; elseScope?: 'patient' | 'facility'; within?: string; tag?: string };
  elements?: Record<string, ElementSpec | ElementSpec[]>;
  role?: { from: string; table: string; member: string; start?: string; end?: string; generalPractitioner?: string };
}

export interface MessageFile {
  structure: string;
  events: Record<string, { plan: PlanEvent; encounterStatus?: string; clear?: string[]; requestStatus?: string; conditionStatus?: string; appointmentStatus?: string }>;
  /** `with`: companion segments after the primary one (PD1 after PID); `context`: the nearest one before it (OBR before OBX) */
  /** `each`: one resource per repetition of this field of the segment (PDA-1: one Condition per cause of death) */
  resources: { rule: string; segment: string; with?: string[]; also?: string[]; context?: string[]; repeat?: boolean; when?: Condition | Condition[]; contextInGroup?: boolean; each?: string }[];
  /** segments and fields this structure does not map on purpose, each with why (reported instead of "not mapped") */
  leaves?: Record<string, string>;
  /** flags the message raises for the coordination rules (`flag:` in mappings/careplan/rules.yaml), each by a condition */
  flags?: Record<string, Condition>;
  /** when the event happened: the first location with a valid timestamp (else common.yaml's) */
  eventTime?: string[];
}

export type CompiledRule = ResourceFile & { used: Map<string, Set<number>>; compiled: CompiledElement[] };

/** mappings/hl7v2/common.yaml */
export interface CommonFile {
  eventTime: string[];
  author?: string;
  codingSystems: Record<string, string>;
}

export interface Compiled {
  common: CommonFile;
  messages: Map<string, MessageFile>;
  rules: Map<string, CompiledRule>;
  codes: CodeTables;
  facilities: Map<string, { registryCode: string; name?: string; charset?: string }>;
}

const LOC = /^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?(?:\.(\d+))?$/;

const locCache = new Map<string, Loc>();

/** `PID-3.1` → its parts; parsed once per distinct text (mapping files name a fixed set of locations). */
export function parseLoc(text: string): Loc {
  const hit = locCache.get(text);
  if (hit) return hit;
  const loc = parseLocUncached(text);
  locCache.set(text, loc);
  return loc;
}

function parseLocUncached(text: string): Loc {
  const m = LOC.exec(text);
  if (!m) throw new Error(`not an HL7 location: "${text}"`);
  return { segment: m[1], field: Number(m[2]), component: m[3] ? Number(m[3]) : undefined, sub: m[4] ? Number(m[4]) : undefined, text };
}

/** What a conversion carries along: the message, the compiled files, what was produced and reported so far. */
export interface Ctx extends IdentifierContext {
  senderId?: string;
  msg: Hl7Message;
  m: Compiled;
  issues: OperationOutcomeIssue[];
  produced: Resource[];
  patientId?: string;
  facility: string;
  /** `otherwise: warn` warnings already given (a field two routes test is reported once) */
  warned?: Set<string>;
}

/** Which resource a segment instance built, for `ref-to` and `refs-to`. */
export interface Built {
  resource: Resource;
  segment: Hl7Segment;
}

/* ------------------------------------------------------------------ segments and values */

export interface Scope {
  msg: Hl7Message;
  seg: Hl7Segment;
  withSegs: Hl7Segment[];
  /** the segments from this one up to the next segment of the same name */
  group: Hl7Segment[];
}

/** The segments belonging to a primary segment: from it up to the next segment with its name (or the end). */
export function groupOf(msg: Hl7Message, seg: Hl7Segment, name: string): Hl7Segment[] {
  const out: Hl7Segment[] = [];
  for (let i = seg.index; i < msg.segments.length; i++) {
    if (i > seg.index && msg.segments[i].name === name) break;
    out.push(msg.segments[i]);
  }
  return out;
}

export function segmentFor(scope: Scope, name: string): Hl7Segment | undefined {
  if (scope.seg.name === name) return scope.seg;
  return scope.withSegs.find((s) => s.name === name) ?? (name === 'MSH' || name === 'EVN' ? scope.msg.segments.find((s) => s.name === name) : undefined);
}

export function reps(scope: Scope, loc: Loc): Hl7Repetition[] {
  return segmentFor(scope, loc.segment)?.fields[loc.field] ?? [];
}

export function read(scope: Scope, loc: Loc, rep = 0): string {
  const r = reps(scope, loc)[rep];
  return (r?.[(loc.component ?? 1) - 1]?.[(loc.sub ?? 1) - 1] ?? '').trim();
}

/** A resource whose reference elements wait for the rest of the message. */
export interface Pending {
  resource: Record<string, unknown>;
  scope: Scope;
  elements: CompiledElement[];
}

/** Sets `target` (a dotted path; `x[]` appends) in `r`; a scalar already set is kept. */
export function setPath(r: Record<string, unknown>, target: string, v: unknown): void {
  if (v === undefined || v === null) return;
  const parts = target.split('.');
  let o = r;
  for (let i = 0; i < parts.length; i++) {
    const isArray = parts[i].endsWith('[]');
    const key = isArray ? parts[i].slice(0, -2) : parts[i];
    const last = i === parts.length - 1;
    if (last) {
      if (isArray) o[key] = [...((o[key] as unknown[]) ?? []), ...(Array.isArray(v) ? v : [v])];
      else if (o[key] === undefined) o[key] = v;
      return;
    }
    o[key] ??= {};
    o = o[key] as Record<string, unknown>;
  }
}

