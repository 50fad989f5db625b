/**
 * Assembles a gateway from its parts: store → HL7 v2 receiver (MLLP and HTTP) → HTTP (FHIR API, admin) →
 * inbox worker. main.ts runs it as a process; tests start several of these in one process on port 0.
 */
import fs from 'node:fs';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { openStore, type Store } from './store/index.js';
import { startHttpServer, type HttpServer } from './api/http.js';
import { hl7v2Route } from './api/hl7v2.js';
import { InboxWorker } from './ingest/worker.js';
import { Hl7Receiver, type ReceiveResult } from './ingest/hl7v2/receiver.js';
import { convertMessage, hl7BatchProcessor, reprocessHl7 } from './ingest/hl7v2/process.js';
import { setHl7MappingsDir } from './mapping/hl7v2/load.js';
import { setDefaultZone } from './mapping/datatypes.js';
import { startMllpServer, type MllpServer } from './mllp/server.js';
import { writeChecks } from './write-checks.js';
import { socialCareRoute } from './api/social.js';
import { setSocialMappingsDir, socialMapping, socialSources } from './social/mapping.js';
import { socialProcessor } from './social/import.js';
import { ImportWorkers } from './social/workers.js';
import { conformanceResources } from './fhir/profiles.js';
import { Security, isLoopback } from './auth/security.js';
import { SenderAllowList, parseSenderRules } from './mllp/senders.js';
import { OutcomeError } from './fhir/outcome.js';
import { recordAudit, setAuditKey, verifyAuditChain } from './auth/audit.js';
import { admitHl7Caller } from './api/hl7-callers.js';
import { readMsh } from './hl7v2/ack.js';
import { rawMsh } from './hl7v2/decode.js';
import { json } from './api/fhir.js';
import { releaseDefinitions, resourceTypes } from './fhir/definitions.js';
import { prepareValidation } from './fhir/validate.js';
import { summaryElements } from './api/shape.js';
import { searchParamsFor } from './fhir/searchparams.js';

export interface Gateway {
  config: Config;
  store: Store;
  http: HttpServer;
  /** undefined when MLLP_PORT is 0 */
  mllp?: MllpServer;
  worker: InboxWorker;
  receiver: Hl7Receiver;
  /** writes the audit summaries of refused authentications (every minute by itself; `all` also the current minute) */
  auditRefusals(all?: boolean): Promise<number>;
  /** graceful shutdown: stop accepting, finish in-flight work, close the store */
  close(): Promise<void>;
}

export interface GatewayOptions {
  /** PostgreSQL schema (tests) */
  schema?: string;
  /** listen for MLLP on an ephemeral port even though MLLP_PORT says 0 (tests) */
  mllpEphemeral?: boolean;
}

/** The AuditEvent of one MLLP message: the sender by MSH-3/4 and address, the person it was about, the outcome. */
async function auditMllp(store: Store, receiver: Hl7Receiver, r: ReceiveResult, payload: Buffer, address: string): Promise<void> {
  const msh = readMsh(rawMsh(payload));
  const patient = await receiver.patientOf(r);
  await recordAudit(store, {
    interaction: 'create',
    outcome: r.code === 'AA' || r.code === 'CA' ? '0' : '4',
    outcomeDesc: r.code === 'AA' || r.code === 'CA' ? undefined : `HL7 ${r.code}`,
    sender: `MLLP sender ${msh?.sendingApp ?? '?'}|${msh?.sendingFacility ?? '?'}`,
    query: `MLLP ${msh?.messageType ?? ''} ${msh?.controlId ?? ''}`.trim(),
    patients: patient ? [patient] : [],
    address,
  });
}

export async function startGateway(config: Config, logger: Logger, opts: GatewayOptions = {}): Promise<Gateway> {
  const t0 = performance.now();
  // secure by default: without authentication only on the loopback interface, and loudly
  if (!config.auth && !isLoopback(config.host)) {
    throw new Error(
      `refusing to start: HOST=${config.host} is not a loopback address and no authentication is configured. ` +
        'Set AUTH_JWKS and AUTH_ISSUERS (see README "Security"), or bind to 127.0.0.1 for a local trial.',
    );
  }
  const mllpOn = config.mllpPort !== 0 || !!opts.mllpEphemeral;
  if (mllpOn && !config.mllpAllowedSenders && !isLoopback(config.host)) {
    throw new Error(
      `refusing to start: HOST=${config.host} is not a loopback address and the MLLP listener would accept any sender. ` +
        'Set MLLP_ALLOWED_SENDERS (see README "Security"), or MLLP_PORT=0 to turn MLLP off.',
    );
  }
  const senders = config.mllpAllowedSenders ? new SenderAllowList(parseSenderRules(config.mllpAllowedSenders)) : undefined;
  const mllpTls = config.mllpTls
    ? { cert: fs.readFileSync(config.mllpTls.cert), key: fs.readFileSync(config.mllpTls.key), ...(config.mllpTls.ca ? { ca: fs.readFileSync(config.mllpTls.ca) } : {}) }
    : undefined;
  if (!config.auth) logger.warn('AUTHENTICATION IS OFF: anyone who can reach this machine\'s loopback interface can read and write all data. Set AUTH_JWKS and AUTH_ISSUERS before real use.');
  const securityConfig = config.auth ? { ...config.auth, audience: config.auth.audience ?? config.baseUrl ?? '' } : undefined;
  const security = securityConfig ? new Security(securityConfig) : undefined;
  // the audit chain's head is signed with a key kept outside the database (AUDIT_KEY_FILE)
  setAuditKey(config.auditKeyFile ? fs.readFileSync(config.auditKeyFile) : undefined);
  setHl7MappingsDir(config.hl7MappingsDir); // a broken mapping file stops the start, naming file, line and path
  setSocialMappingsDir(config.socialMappingsDir);
  for (const source of socialSources()) socialMapping(source);
  setDefaultZone(config.hl7DefaultTimezone);
  // everything derived from the R4 definitions is built now, then the parsed files are let go (memory)
  resourceTypes();
  prepareValidation();
  summaryElements('Patient');
  searchParamsFor('Patient');
  releaseDefinitions();
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, pgliteSharedBuffers: config.pgliteSharedBuffers, schema: opts.schema, ...writeChecks });
  logger.info('store open', { kind: store.db.kind, ms: Math.round(performance.now() - t0), restoredFromJournal: store.restored });
  // the project's profiles, CodeSystems and ValueSets are served like any resource (unchanged ones make no version)
  await store.repo.transaction((w) => w.updateMany(conformanceResources()));
  const rerun = reprocessHl7(store, config.hl7DefaultCharset);
  // municipal imports on more cores: their lanes in worker threads, each with its own connection (PostgreSQL only)
  let importWorkers: ImportWorkers | undefined;
  if (config.importWorkers > 0 && config.databaseUrl) {
    importWorkers = await ImportWorkers.start(config.importWorkers, { databaseUrl: config.databaseUrl, schema: opts.schema, socialMappingsDir: config.socialMappingsDir }).catch(async (err: unknown) => {
      await store.close();
      throw err;
    });
    logger.info('import workers started', { workers: importWorkers.size });
  } else if (config.importWorkers > 0) logger.warn('IMPORT_WORKERS needs PostgreSQL (DATABASE_URL); on the embedded store imports run in the process');
  const worker = new InboxWorker(store, { mllp: rerun, 'hl7v2-http': rerun, 'social-care': socialProcessor(store, importWorkers) }, logger);
  // The embedded store's one connection would serve the background's transactions and the ACKs' in turn: ACKs came
  // later than after the commit (72 against 96 msg/s, p50 3.7 s against 0.7 s at 100 msg/s), so it answers after it.
  const ackAfter = config.hl7AckAfter === 'conversion' && store.db.kind === 'pglite' ? 'commit' : config.hl7AckAfter;
  if (ackAfter !== config.hl7AckAfter) logger.warn('HL7_ACK_AFTER=conversion needs PostgreSQL (DATABASE_URL); on the embedded store ACKs go back after the commit');
  // with ACKs after conversion the plan is written in the background, giving way to messages waiting for an ACK
  const giveWay = ackAfter === 'conversion' ? () => receiver.giveWay() : undefined;
  const receiver: Hl7Receiver = new Hl7Receiver(store, hl7BatchProcessor(store, { giveWay }), {
    ackAfter,
    convert: (text) => convertMessage(text, { validate: true }),
    defaultCharset: config.hl7DefaultCharset,
    logger: logger.child({ channel: 'hl7v2' }),
    // MLLP senders are known by MSH-3/4 and address; over HTTP the bearer token says who sends (api/hl7-callers.ts)
    admit: async (msh, channel, peer, message) => {
      if (channel === 'http') return message.caller ? admitHl7Caller(store.db, msh, message.text, message.caller) : undefined;
      if (!senders) return undefined;
      const address = peer ? peer.slice(0, peer.lastIndexOf(':')) : '';
      const app = msh.sendingApp.split(msh.delimiters.component)[0];
      const facility = msh.sendingFacility.split(msh.delimiters.component)[0];
      return senders.allows(app, facility, address)
        ? undefined
        : new OutcomeError('forbidden', `sender ${app}|${facility} is not allowed to send from ${address} (MLLP_ALLOWED_SENDERS)`, 'MSH-3');
    },
  });
  const http = await startHttpServer(store, {
    host: config.host,
    port: config.port,
    baseUrl: config.baseUrl,
    maxBodyBytes: config.maxBodyBytes,
    jsonLimits: config.jsonLimits,
    defaultPageSize: config.defaultPageSize,
    maxPageSize: config.maxPageSize,
    logger,
    routes: [
      hl7v2Route(receiver),
      socialCareRoute(store, config.socialCareMaxBytes, importWorkers),
      { method: 'GET', pattern: /^\/admin\/audit\/\$verify$/, handler: async () => json(200, await verifyAuditChain(store)) },
    ],
    security,
    reprocess: (id) => worker.runById(id),
  });
  // tokens are for this server: the audience is BASE_URL, or the base the server actually bound to
  if (securityConfig && !securityConfig.audience) securityConfig.audience = http.baseUrl;
  let mllp: MllpServer | undefined;
  if (mllpOn) {
    mllp = await startMllpServer({
      tls: mllpTls,
      allowAddress: senders ? (a) => senders.allowsAddress(a) : undefined,
      host: config.host,
      port: config.mllpPort,
      maxMessageBytes: config.mllpMaxMessageBytes,
      idleTimeoutMs: config.mllpIdleTimeoutMs,
      maxConnectionsPerAddress: config.mllpMaxConnectionsPerAddress,
      logger: logger.child({ channel: 'mllp' }),
      handler: async (payload, peer) => {
        const r = await receiver.receive(payload, 'mllp', `${peer.remoteAddress}:${peer.remotePort}`);
        // with an allow-list (MLLP's access control) every message is audited like an HTTP write, refusals too
        if (senders) await auditMllp(store, receiver, r, payload, peer.remoteAddress).catch((e: unknown) => logger.error('audit write failed', { error: e instanceof Error ? e.message : String(e) }));
        return r.ack;
      },
    });
  }
  // messages stored but not processed before a crash are processed now, then whatever arrives later
  worker.start();
  // refused authentications: one AuditEvent per address and minute (auth/security.ts)
  const auditRefusals = async (all = false): Promise<number> => {
    const summaries = security?.takeRefusals(all) ?? [];
    for (const r of summaries) {
      const reasons = Object.entries(r.reasons).map(([why, n]) => `${n}× ${why}`).join('; ');
      await recordAudit(store, {
        interaction: 'operation',
        outcome: '4',
        outcomeDesc: `${r.count} request(s) refused at authentication in the minute from ${r.minute}: ${reasons}`,
        address: r.address,
        patients: [],
      }).catch((e: unknown) => logger.error('audit write failed', { error: e instanceof Error ? e.message : String(e) }));
    }
    return summaries.length;
  };
  const refusalTimer = security ? setInterval(() => void auditRefusals(), 60_000) : undefined;
  refusalTimer?.unref();
  let closing: Promise<void> | undefined;
  return {
    config,
    store,
    http,
    mllp,
    worker,
    receiver,
    auditRefusals,
    close() {
      closing ??= (async () => {
        clearInterval(refusalTimer);
        await Promise.all([http.close(), mllp?.close()]);
        await auditRefusals(true);
        await receiver.drain(); // messages acknowledged after conversion: their resources committed first
        await worker.stop();
        await importWorkers?.close();
        await store.close();
      })();
      return closing;
    },
  };
}
