/**
 * An import worker thread (workers.ts): opens the same PostgreSQL store as the process, with the same write checks,
 * and commits the batches it is sent with `commitRows`, answering each with its rows' outcomes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openDb } from '../store/db.js';
import { Repository } from '../store/repository.js';
import { writeChecks } from '../write-checks.js';
import { releaseDefinitions, resourceTypes } from '../fhir/definitions.js';
import { prepareValidation } from '../fhir/validate.js';
import { searchParamsFor } from '../fhir/searchparams.js';
import { OutcomeError } from '../fhir/outcome.js';
import { setSocialMappingsDir, socialMapping } from './mapping.js';
import { commitRows } from './import.js';
import type { WorkerReply, WorkerRequest, WorkerSetup } from './workers.js';

const port = parentPort!;
const setup = workerData as WorkerSetup;
const reply = (m: WorkerReply): void => port.postMessage(m);

setSocialMappingsDir(setup.socialMappingsDir);
resourceTypes();
// the validators of what a municipal record becomes are compiled now, not during the first import's batches
prepareValidation('Patient', 'Organization', 'Practitioner', 'ServiceRequest', 'RelatedPerson', 'CarePlan', 'CareTeam', 'Provenance');
searchParamsFor('Patient');
releaseDefinitions();
// one lane runs one transaction at a time: one connection
const db = await openDb({ databaseUrl: setup.databaseUrl, schema: setup.schema, poolSize: 1 });
await db.query('SELECT 1'); // a store it cannot reach stops the start now, not the first import
const repo = new Repository(db, writeChecks);

port.on('message', (m: WorkerRequest) => {
  if ('close' in m) {
    void db.close().finally(() => port.close());
    return;
  }
  const { id, job } = m;
  void (async () => {
    try {
      const mapping = socialMapping(job.source);
      if (!mapping) throw new Error(`no mapping for social-care source "${job.source}" in the import worker`);
      reply({ id, outcomes: await commitRows(repo, mapping, job.rows, job.inboxId) });
    } catch (err) {
      // an OperationOutcome error goes back as one; anything else (a lost connection) as a plain error, which the
      // process logs and answers as an internal error, as it does when the lanes run in process
      reply({ id, error: err instanceof OutcomeError ? { category: err.category, message: err.message } : { message: err instanceof Error ? err.message : String(err) } });
    }
  })();
});
reply({ ready: true });
