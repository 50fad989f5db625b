/**
 * An isikukood is never echoed whole: not in an ACK (MSA-3, ERR-8) for a wrong one, not in a municipal import report,
 * not in a warning about a contradicting birth date — the first and last digits at most.
 */
import { convertMessage } from '../../src/ingest/hl7v2/process.js';
import { buildAck } from '../../src/hl7v2/ack.js';
import { checkIsikukood } from '../../src/fhir/identifiers.js';
import { eeDischarge } from '../fixtures/hl7v2/messages.js';

test('a wrong isikukood is refused without echoing it', () => {
  for (const wrong of ['37302102712', '3730210271', '39913402711', '3730210271X']) {
    const c = convertMessage(eeDischarge({ isikukood: wrong, pid3: `${wrong}^^^EE^NI` }));
    expect(c.kind).toBe('refused');
    if (c.kind !== 'refused') continue;
    const ack = buildAck(eeDischarge({ isikukood: wrong }), { code: 'AE', errors: c.outcome.errors, issues: [] });
    expect([wrong, ack.includes(wrong), JSON.stringify(c.record).includes(wrong), c.reason.includes(wrong)]).toEqual([wrong, false, false, false]);
    expect(ack).toMatch(/MSA\|AE/);
    expect(checkIsikukood(wrong).reason ?? '').not.toContain(wrong.slice(1, 7));
  }
});

test('a birth date that contradicts the isikukood is a warning that does not repeat it', () => {
  const m = eeDischarge({ isikukood: '37302102711' }).replace('|19730210|', '|19800101|');
  const c = convertMessage(m);
  expect(c.kind).toBe('converted');
  if (c.kind === 'converted') {
    expect(c.notes.length).toBeGreaterThan(0);
    expect(JSON.stringify(c.notes)).not.toContain('37302102711');
  }
});
