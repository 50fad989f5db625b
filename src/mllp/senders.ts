/**
 * Which HL7 v2 senders an MLLP listener accepts (MLLP_ALLOWED_SENDERS): a comma-separated list of rules
 *
 *     APPLICATION|FACILITY@ADDRESS
 *
 * APPLICATION and FACILITY are compared with MSH-3.1 and MSH-4.1 (case-sensitive, `*` = any); ADDRESS is an IPv4 or
 * IPv6 address, an IPv4 CIDR block (`10.20.0.0/16`) or `*`. Example:
 * `TYK_HIS|TYK@10.20.0.0/16,PERE_EHR|*@192.0.2.17`.
 *
 * A connection from an address no rule names is closed at once, before anything is read. A message whose MSH-3/4
 * no rule allows for the connection's address is stored (as rejected, so the message log shows the attempt) and
 * answered AR with ERR-3 207.
 */
import net from 'node:net';

export interface SenderRule {
  application: string;
  facility: string;
  address: string;
}

export function parseSenderRules(text: string): SenderRule[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((rule) => {
      const m = /^([^|@\s]+)\|([^|@\s]+)@(\S+)$/.exec(rule);
      if (!m) throw new Error(`MLLP_ALLOWED_SENDERS: "${rule}" is not APPLICATION|FACILITY@ADDRESS (use * for any)`);
      const address = m[3];
      if (address !== '*' && !net.isIP(address) && !isCidr(address)) {
        throw new Error(`MLLP_ALLOWED_SENDERS: "${address}" is not an IP address, an IPv4 CIDR block or *`);
      }
      return { application: m[1], facility: m[2], address };
    });
}

function isCidr(s: string): boolean {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(s);
  return !!m && net.isIPv4(m[1]) && Number(m[2]) <= 32;
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) → `10.0.0.1`. */
function plain(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}

function addressMatches(rule: string, address: string): boolean {
  if (rule === '*') return true;
  const a = plain(address);
  if (!rule.includes('/')) return plain(rule) === a;
  if (!net.isIPv4(a)) return false;
  const [base, bits] = rule.split('/');
  const mask = Number(bits) === 0 ? 0 : (0xffffffff << (32 - Number(bits))) >>> 0;
  return ((ipv4ToInt(a) & mask) >>> 0) === ((ipv4ToInt(base) & mask) >>> 0);
}

export class SenderAllowList {
  constructor(readonly rules: SenderRule[]) {}

  /** May anything come from this address? */
  allowsAddress(address: string): boolean {
    return this.rules.some((r) => addressMatches(r.address, address));
  }

  /** May this application at this facility send from this address? (MSH-3.1, MSH-4.1) */
  allows(application: string, facility: string, address: string): boolean {
    return this.rules.some(
      (r) => addressMatches(r.address, address) && (r.application === '*' || r.application === application) && (r.facility === '*' || r.facility === facility),
    );
  }
}
