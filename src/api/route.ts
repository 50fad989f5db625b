/** What the HTTP server hands a route, and what a route is: shared by the server and the routes it serves. */
import type { Principal } from '../auth/jwt.js';
import type { FhirResponse } from './fhir.js';

export interface HttpRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | undefined>;
  body: Buffer;
  remoteAddress: string;
  /** the authenticated caller, when authentication is on */
  principal?: Principal;
}

/** A route handler for the non-FHIR paths (HL7 v2, social care, admin). */
export type Route = (req: HttpRequest, match: RegExpExecArray) => Promise<FhirResponse>;
