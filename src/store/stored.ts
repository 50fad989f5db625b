/**
 * The JSON text a resource was read from, kept beside the parsed object while the object lives, so a search
 * page can be answered with the stored texts spliced into the Bundle instead of serialising every resource again
 * (a page of 50 CareTeams: JSON.stringify was 13 % of the gateway's time, bench/api.ts).
 * Only objects parsed here and never changed are served this way: a changed copy (a `_summary` subset, a redacted
 * resource) is a new object, unknown to this map, and is serialised as usual.
 */
import type { Resource } from '../fhir/types.js';

const texts = new WeakMap<object, string>();

/** Parses a stored resource and remembers its text. The result must not be modified in place. */
export function parseStored<T extends Resource = Resource>(content: string): T {
  const r = JSON.parse(content) as T;
  texts.set(r, content);
  return r;
}

/** The stored text r was parsed from, if it came from parseStored. */
export function storedText(r: object): string | undefined {
  return texts.get(r);
}

/**
 * A stand-in for a stored resource that is only going to be serialised: its type and id, and its stored text.
 * Nothing but bundleJson may read it (search with `textsOnly`).
 */
export function textOnly(resourceType: string, id: string, content: string): Resource {
  const r = { resourceType, id } as Resource;
  texts.set(r, content);
  return r;
}
