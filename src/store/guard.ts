/**
 * The caller's access policy as the store sees it. Every read and write the FHIR API makes on behalf of a caller
 * goes through a Writer or a scoped repository that holds one of these (`Repository.as(guard)`), so a path above the
 * store — a Bundle entry, a conditional form, an operation — cannot reach patient data without passing it. The
 * gateway's own work (plan assembly, HL7 v2 and municipal ingest, the audit trail) runs without a guard: it is the
 * trusted source of what grants access. The policy itself lives in `auth/access.ts`; the store only calls it.
 * `q` is the transaction a decision must read in (the embedded store has one connection: reading beside an open
 * transaction would wait for it), the pool when absent.
 */
import type { Resource } from '../fhir/types.js';
import type { Queryable } from './db.js';

export type Operation = 'c' | 'r' | 'u' | 'd' | 's';

export interface Guard {
  /** SMART scope check: throws 403 unless the caller's token allows `op` on `type` */
  allow(type: string, op: Operation): void;
  /** the copies of these resources the caller may see (redacted where needed); the others are left out */
  filter<T extends Resource>(resources: T[], q?: Queryable): Promise<T[]>;
  /** the copy of one resource the caller may see, or a 403 saying why not */
  reveal<T extends Resource>(r: T, q?: Queryable): Promise<T>;
  /** may the caller write `next` where `old` is stored now (undefined: nothing is, or — `wasDeleted` — a deletion)? throws 403 */
  write(old: Resource | undefined, next: Resource, q?: Queryable, wasDeleted?: boolean): Promise<void>;
  /** may the caller delete `old`? throws 403 */
  remove(old: Resource, q?: Queryable): Promise<void>;
  /** may the caller search `resourceType` with these parameters (reverse chains, chains into others' records)? throws 403 */
  searching(params: [string, string][], resourceType?: string): void;
  /** may the caller use these as conditional criteria (they are matched among hidden resources too)? throws 403 */
  conditional(params: [string, string][]): void;
  /** confidentiality labels the caller is not cleared for (applied inside chains and reverse chains) */
  hiddenLabels(): string[];
  /** the caller may see every person: totals, system history */
  readonly seesAll: boolean;
}
