/**
 * HL7 v2 over HTTP is tied to the token that sends it. The gateway's plan assembly trusts what an HL7 v2 message
 * says (it is the feed that names GPs, residences and merges), so over HTTP the message must be the caller's own:
 *
 * - the sending facility (MSH-4.1, through `mappings/facilities.yaml`) must be the token's organisation;
 * - ADT events (admissions, discharges, demographics, merges) come from hospitals: a GP sends its own kinds —
 *   referrals (REF), results (ORU), documents (MDM), problems (PPR);
 * - a GP's message is for a person it already has a care relationship with (or a person not yet stored), and may
 *   not name its own organisation the person's GP (PD1-3) where the stored Patient does not;
 * - a merge (A39–A42) may retire only a person the caller sees;
 * - the county coordinator may send anything; a municipality sends files, not HL7 v2 (the route refuses it).
 *
 * MLLP senders are bound by `MLLP_ALLOWED_SENDERS` (address, MSH-3/4) instead; an MLLP feed is a configured link.
 */
import type { Patient } from '@medplum/fhirtypes';
import { OutcomeError } from '../fhir/outcome.js';
import type { Queryable } from '../store/db.js';
import type { RawMsh } from '../hl7v2/ack.js';
import { convertMessage } from '../ingest/hl7v2/process.js';
import { loadMappings } from '../mapping/hl7v2/load.js';
import { identityHolder } from '../careplan/identity.js';
import { Access } from '../auth/access.js';
import type { Principal } from '../auth/jwt.js';

const GP_MESSAGES = new Set(['REF', 'ORU', 'MDM', 'PPR']);
const MERGES = new Set(['A39', 'A40', 'A41', 'A42']);

export async function admitHl7Caller(db: Queryable, msh: RawMsh, text: string, caller: Principal): Promise<OutcomeError | undefined> {
  if (caller.kind === 'coordinator') return undefined;
  const c = msh.delimiters.component;
  const type = msh.messageType.split(c)[0];
  const trigger = msh.triggerEvent || msh.messageType.split(c)[1] || '';
  const who = `${caller.kind} ${caller.organization}`;
  if (caller.kind !== 'hospital' && caller.kind !== 'gp') return new OutcomeError('forbidden', `HL7 v2 is sent by hospitals and GPs, not ${who}`, 'MSH-4');
  const facility = msh.sendingFacility.split(c)[0];
  const registryCode = loadMappings().facilities.get(facility.toUpperCase())?.registryCode;
  if (registryCode !== caller.organization) {
    return new OutcomeError(
      'forbidden',
      registryCode
        ? `MSH-4 names ${facility} (registry code ${registryCode}); this token is for ${caller.organization}: send your own messages`
        : `MSH-4 names ${facility}, which mappings/facilities.yaml does not know: the sending facility must be your own, listed with your registry code`,
      'MSH-4',
    );
  }
  if (caller.kind === 'gp' && !GP_MESSAGES.has(type)) {
    return new OutcomeError('forbidden', `${type}^${trigger} events come from the hospital's feed; a GP sends referrals (REF), results (ORU), documents (MDM) and problems (PPR)`, 'MSH-9');
  }
  if (caller.kind !== 'gp' && !MERGES.has(trigger)) return undefined;
  // what the message is about, as the gateway will read it
  const converted = convertMessage(text);
  if (converted.kind !== 'converted') return undefined; // refused with its own reasons later
  const conv = converted.conv;
  const access = new Access(db, caller);
  if (conv.merge && !(await access.seesPatient(conv.merge.retiredPatientId))) {
    return new OutcomeError('forbidden', `${who} has no care relationship with the person this merge would retire`, 'MRG-1');
  }
  if (caller.kind !== 'gp') return undefined;
  const holder = await identityHolder(db, conv.patient);
  if (holder && !(await access.seesPatient(holder))) return new OutcomeError('forbidden', `${who} has no care relationship with this person`, 'PID-3');
  const orgs = await access.orgRefs();
  const stored = holder ? (await db.query<{ content: string }>(`SELECT content FROM resource WHERE resource_type = 'Patient' AND id = $1`, [holder]))[0] : undefined;
  const before = new Set(((stored ? (JSON.parse(stored.content) as Patient) : undefined)?.generalPractitioner ?? []).map((g) => g.reference));
  if ((conv.patient.generalPractitioner ?? []).some((g) => g.reference && orgs.has(g.reference) && !before.has(g.reference))) {
    return new OutcomeError('forbidden', `${who} may not name itself the person's GP (GP registration comes with the hospital's ADT feed or from the county coordinator)`, 'PD1-3');
  }
  return undefined;
}
