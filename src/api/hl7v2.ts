/**
 * HL7 v2 over HTTP: `POST /hl7v2` with one ER7 message; the response body is the HL7 ACK — 200 with MSA|AA,
 * 4xx with AE/AR and an ERR segment. Same semantics as MLLP (one receive path).
 */
import { OutcomeError } from '../fhir/outcome.js';
import type { Hl7Receiver } from '../ingest/hl7v2/receiver.js';
import type { Route } from './route.js';

const TYPES = new Set(['x-application/hl7-v2+er7', 'application/hl7-v2', 'text/plain', 'application/edi-hl7', '']);

export function hl7v2Route(receiver: Hl7Receiver): { method: string; pattern: RegExp; handler: Route } {
  return {
    method: 'POST',
    pattern: /^\/hl7v2$/,
    handler: async (req) => {
      const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      if (!TYPES.has(ct)) throw new OutcomeError('unsupported', `Content-Type ${ct} is not HL7 v2; send x-application/hl7-v2+er7 or text/plain`, 'Content-Type');
      if (req.body.length === 0) throw new OutcomeError('structure', 'the body is empty; send one HL7 v2 message', 'MSH');
      const r = await receiver.receive(req.body, 'hl7v2-http', undefined, req.principal);
      const patient = await receiver.patientOf(r);
      return {
        auditPatients: patient ? [patient] : [],
        status: r.status,
        headers: { 'Content-Type': 'x-application/hl7-v2+er7; charset=utf-8', ...(r.inboxId ? { 'X-Inbox-Id': r.inboxId } : {}) },
        body: r.ackText,
      };
    },
  };
}
