/**
 * Municipal social-care records: `POST /social-care/{source}` with a CSV or JSON export.
 * The file is stored whole in the inbox (committed) before anything else; then its rows are imported and the
 * answer is the import report: 200 when rows were accepted (rejected ones listed with row, field and reason),
 * 422 when every row was rejected, 400 when the file itself cannot be read, 404 for an unknown source; when the
 * store fails during the import, the error (500/503), and the stored file is imported again by the inbox worker.
 */
import { OutcomeError } from '../fhir/outcome.js';
import type { Store } from '../store/index.js';
import { socialMapping, socialSources } from '../social/mapping.js';
import { importStored } from '../social/import.js';
import type { Route } from './route.js';
import type { ImportWorkers } from '../social/workers.js';

const CSV_TYPES = new Set(['text/csv', 'text/plain', 'application/csv', 'application/vnd.ms-excel', 'application/octet-stream', '']);
const JSON_TYPES = new Set(['application/json', 'text/json', 'application/octet-stream', '']);

export function socialCareRoute(store: Store, maxBodyBytes: number, workers?: ImportWorkers): { method: string; pattern: RegExp; handler: Route; maxBodyBytes: number } {
  return {
    method: 'POST',
    pattern: /^\/social-care\/([^/]+)$/,
    maxBodyBytes,
    handler: async (req, m) => {
      const source = decodeURIComponent(m[1]);
      const mapping = socialMapping(source);
      if (!mapping) throw new OutcomeError('not-found', `no mapping for social-care source "${source}" (known: ${socialSources().join(', ') || 'none'}); add mappings/social/${source}.yaml`, 'source');
      // writes only as oneself: a municipality posts its own export (the county coordinator may post any)
      if (req.principal?.kind === 'municipality' && req.principal.organization !== mapping.municipality.registryCode) {
        throw new OutcomeError('forbidden', `source ${source} is the export of ${mapping.municipality.name}; your token is for organisation ${req.principal.organization}`);
      }
      const ct = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      if (!(mapping.format === 'csv' ? CSV_TYPES : JSON_TYPES).has(ct)) {
        throw new OutcomeError('unsupported', `source ${source} exports ${mapping.format.toUpperCase()}; Content-Type ${ct} does not match`, 'Content-Type');
      }
      if (req.body.length === 0) throw new OutcomeError('structure', 'the body is empty; send the export file', 'body');
      const { entry } = await store.inbox.receive({ channel: 'social-care', payload: req.body, sender: source, contentType: ct || undefined });
      let report;
      try {
        report = await importStored(store, mapping, entry.id, req.body, { workers });
      } catch (err) {
        // the store failed (a lost connection, a conflict that did not clear): the file stays stored and goes back to
        // the inbox worker, which imports it again within a second (rows already committed are unchanged then); a
        // failure that repeats leaves it `failed` with its reason, for $reprocess
        await store.inbox.requeue(entry.id).catch(() => undefined);
        throw err;
      }
      const status = report.error ? 400 : report.status === 'rejected' ? 422 : 200;
      return {
        status,
        headers: { 'Content-Type': 'application/json; charset=utf-8', 'X-Inbox-Id': entry.id },
        body: JSON.stringify(report),
      };
    },
  };
}
