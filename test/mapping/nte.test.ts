/**
 * NTE segments become notes on the resource they follow, with escapes decoded: after a DG1 on the Condition, after an
 * OBX on the Observation (V2-to-FHIR IG: the group's NTE → .note).
 */
import type { Condition, Observation } from '@medplum/fhirtypes';
import { convertMessage } from '../../src/ingest/hl7v2/process.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

test('a note after the diagnosis goes on the Condition, escapes decoded; one after an OBX on the Observation', () => {
  const m = [
    eeDischarge(),
    'NTE|1||Paremal k\\T\\e n\\F\\rk\\.br\\vajab abi',
    'OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F',
    'NTE|1||mõõdetud puhkeolekus',
  ].join('\r');
  const c = convertMessage(m);
  expect(c.kind).toBe('converted');
  if (c.kind !== 'converted') return;
  const condition = c.conv.resources.find((r): r is Condition => r.resourceType === 'Condition')!;
  expect(condition.note).toEqual([{ text: 'Paremal k&e n|rk\nvajab abi' }]);
  const obs = c.conv.resources.find((r): r is Observation => r.resourceType === 'Observation')!;
  expect(obs.note).toEqual([{ text: 'mõõdetud puhkeolekus' }]);
  expect(c.notes.filter((n) => /NTE/.test(JSON.stringify(n)))).toEqual([]);
});

test('a note right after the RF1 goes on the referral', async () => {
  const { gpReferral } = await import('../fixtures/hl7v2/messages.js');
  const m = gpReferral('37302102711', 'NTE-RF').split('\r');
  m.splice(2, 0, 'NTE|1||Elab \\T\\ liigub üksi\\.br\\vajab koduteenust');
  const c = convertMessage(m.join('\r'));
  expect(c.kind).toBe('converted');
  if (c.kind !== 'converted') return;
  const sr = c.conv.resources.find((r) => r.resourceType === 'ServiceRequest') as { note?: { text?: string }[] };
  expect(sr.note).toEqual([{ text: 'Elab & liigub üksi\nvajab koduteenust' }]);
});

test('each NTE is one note: its lines (NTE-3 repeated) joined, NTE-5 who entered it, NTE-6 when (IG NTE[Observation]); an NTE without text is none', () => {
  const m = [
    eeDischarge(),
    'OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F',
    'NTE|1||mõõdetud puhkeolekus~pärast 10 min istumist||N33333^Õde^Anu|20261110114500',
    'NTE|2||||N33333^Õde^Anu|20261110115000',
  ].join('\r');
  const c = convertMessage(m);
  expect(c.kind).toBe('converted');
  if (c.kind !== 'converted') return;
  const obs = c.conv.resources.find((r): r is Observation => r.resourceType === 'Observation')!;
  const nurse = c.conv.resources.find((r) => r.resourceType === 'Practitioner' && (r as { identifier?: { value?: string }[] }).identifier?.[0].value === 'N33333')!;
  expect(obs.note).toEqual([{ text: 'mõõdetud puhkeolekus\npärast 10 min istumist', authorReference: expect.objectContaining({ reference: `Practitioner/${nurse.id}` }), time: '2026-11-10T11:45:00+02:00' }]);
});

test('a note after the OBR of a result goes on its order (IG NTE[ServiceRequest]), with its author', async () => {
  const { labResult } = await import('../fixtures/hl7v2/messages.js');
  const m = labResult().split('\r');
  const obr = m.findIndex((s) => s.startsWith('OBR'));
  m.splice(obr + 1, 0, 'NTE|1|L|Proov hemolüüsunud||D55555^Kivi^Kalle');
  const c = convertMessage(m.join('\r'));
  expect(c.kind).toBe('converted');
  if (c.kind !== 'converted') return;
  const order = c.conv.resources.find((r) => r.resourceType === 'ServiceRequest') as { note?: { text?: string; authorReference?: { reference?: string } }[] };
  expect(order.note?.map((n) => n.text)).toEqual(['Proov hemolüüsunud']);
  expect(order.note?.[0].authorReference?.reference).toMatch(/^Practitioner\//);
  expect(c.conv.unused).not.toContain('NTE');
});
