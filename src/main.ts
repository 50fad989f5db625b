/**
 * The gateway process: reads the environment, starts, and shuts down gracefully on
 * SIGTERM/SIGINT (stop accepting, finish in-flight work, close the store).
 */
import { loadConfig } from './config.js';
import { createLogger } from './log.js';
import { startGateway } from './app.js';

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

export async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel, { service: 'care-gateway' });
  if (LOOPBACK.test(config.host)) {
    logger.warn('AUTHENTICATION IS OFF: listening on loopback only, for local trial. Do not expose this gateway.', { host: config.host });
  }
  const gw = await startGateway(config, logger);
  logger.info('care-gateway listening', { http: gw.http.port, mllp: gw.mllp?.port ?? null, host: config.host, store: gw.store.db.kind, fhirBase: gw.http.baseUrl });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal });
    gw.close().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (err) => {
        logger.error('shutdown failed', { error: String(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`care-gateway failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
