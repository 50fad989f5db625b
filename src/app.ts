/**
 * Assembles a gateway from its parts: store → HTTP (FHIR API, admin, HL7 v2 over HTTP) → inbox worker.
 * main.ts runs it as a process; tests start several of these in one process on port 0.
 */
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { openStore, type Store } from './store/index.js';
import { startHttpServer, type HttpServer } from './api/http.js';
import { InboxWorker } from './ingest/worker.js';
import { writeChecks } from './write-checks.js';

export interface Gateway {
  config: Config;
  store: Store;
  http: HttpServer;
  worker: InboxWorker;
  /** graceful shutdown: stop accepting, finish in-flight work, close the store */
  close(): Promise<void>;
}

export async function startGateway(config: Config, logger: Logger, opts: { schema?: string } = {}): Promise<Gateway> {
  const t0 = performance.now();
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, schema: opts.schema, ...writeChecks });
  logger.info('store open', { kind: store.db.kind, ms: Math.round(performance.now() - t0), restoredFromJournal: store.restored });
  const worker = new InboxWorker(store, {}, logger);
  const http = await startHttpServer(store, {
    host: config.host,
    port: config.port,
    baseUrl: config.baseUrl,
    maxBodyBytes: config.maxBodyBytes,
    defaultPageSize: config.defaultPageSize,
    maxPageSize: config.maxPageSize,
    logger,
  });
  worker.start();
  let closing: Promise<void> | undefined;
  return {
    config,
    store,
    http,
    worker,
    close() {
      closing ??= (async () => {
        await http.close();
        await worker.stop();
        await store.close();
      })();
      return closing;
    },
  };
}
