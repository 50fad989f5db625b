/**
 * Golden outputs of the project's own fixture messages: for each, the whole Bundle `care-gateway convert` makes is in
 * test/golden/own/<name>.json and compared as a whole, so a reviewer sees every change a mapping edit makes as a diff
 * of these files. `UPDATE_GOLDEN=1 npm test -- test/golden/own.test.ts` rewrites them; without it a missing or
 * different file fails. Paths whose values change from run to run are listed once, in VOLATILE (none do today:
 * ids derive from the messages' identifiers and no conversion reads the clock).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Bundle } from '@medplum/fhirtypes';
import { hl7Bundle } from '../../src/convert.js';
import { eeDeath, eeDischarge, eeFall, eeMerge, eeRegistration, followUp, gpReferral, labResult, largeMdm, problemList, utf8AcceptOnError } from '../fixtures/hl7v2/messages.js';

const DIR = path.resolve('test/golden/own');
const UPDATE = process.env.UPDATE_GOLDEN === '1';

/** Values that are not the conversion's to decide, replaced before comparing: `<resourceType>.<path>` */
const VOLATILE: string[] = ['*.meta.lastUpdated'];

/** One message of every supported structure, and the variants whose mapping differs. */
const CASES: Record<string, () => string> = {
  'adt-a01-admission': () => eeDischarge({ trigger: 'A01' }),
  'adt-a01-fall': () => eeFall(),
  'adt-a01-utf8-no-msh18': () => utf8AcceptOnError(),
  'adt-a02-transfer': () => eeDischarge({ trigger: 'A01' }).replace('ADT^A01^ADT_A01', 'ADT^A02^ADT_A02').replace('EVN|A01', 'EVN|A02'),
  'adt-a03-discharge': () => eeDischarge(),
  'adt-a03-death': () => eeDeath(),
  'adt-a08-update': () => eeDischarge({ trigger: 'A08' }),
  'adt-a11-cancel-admit': () => eeDischarge({ trigger: 'A01' }).replace('ADT^A01^ADT_A01', 'ADT^A11^ADT_A09').replace('EVN|A01', 'EVN|A11'),
  'adt-a13-cancel-discharge': () => eeDischarge({ trigger: 'A13' }),
  'adt-a28-registration': () => eeRegistration(),
  'adt-a40-merge': () => eeMerge('37302102711', '37302102722'),
  'mdm-t02-document': () => largeMdm('MDM-GOLD-1', 1),
  'oru-r01-lab': () => labResult(),
  'ppr-pc1-problem': () => problemList(),
  'ref-i12-referral': () => gpReferral(),
  'siu-s12-follow-up': () => followUp('S12'),
  'siu-s15-cancelled': () => followUp('S15', 'SIU-0002'),
};

function scrub(v: unknown, at: string[] = []): unknown {
  if (Array.isArray(v)) return v.map((x) => scrub(x, at));
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const p = [...at, k].join('.');
    out[k] = VOLATILE.some((pat) => p.endsWith(pat.replace(/^\*\./, ''))) ? '(volatile)' : scrub(x, [...at, k]);
  }
  return out;
}

test('every case has its golden file and every golden file its case', () => {
  if (UPDATE) fs.mkdirSync(DIR, { recursive: true });
  const files = fs.existsSync(DIR) ? fs.readdirSync(DIR).filter((f) => f.endsWith('.json')) : [];
  if (UPDATE) for (const f of files) if (!(f.replace(/\.json$/, '') in CASES)) fs.rmSync(path.join(DIR, f));
  expect(UPDATE ? Object.keys(CASES).sort() : files.map((f) => f.replace(/\.json$/, '')).sort()).toEqual(Object.keys(CASES).sort());
});

test.each(Object.keys(CASES))('%s converts to its golden Bundle', (name) => {
  const { bundle, notes } = hl7Bundle(CASES[name]());
  const actual = scrub({ bundle, unmapped: (notes?.issue ?? []).map((i) => i.diagnostics) }) as { bundle: Bundle };
  const file = path.join(DIR, `${name}.json`);
  if (UPDATE) fs.writeFileSync(file, JSON.stringify(actual, null, 2) + '\n');
  if (!fs.existsSync(file)) throw new Error(`${path.relative('.', file)} is missing: run UPDATE_GOLDEN=1 npm test -- test/golden/own.test.ts and review the diff`);
  expect(actual).toEqual(JSON.parse(fs.readFileSync(file, 'utf8')));
});
