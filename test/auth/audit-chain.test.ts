/**
 * The audit trail resists tampering by someone who can write the database but does not hold the audit key
 * (AUDIT_KEY_FILE): an altered history copy, removed index rows, removed newest events, and a chain rewritten with
 * every hash recomputed are each detected by `GET /admin/audit/$verify`.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { backends, tempDir, type Backend } from '../helpers/backends.js';
import { ik, startSecuredGateway, type SecuredGateway } from '../helpers/auth.js';
import { CHAIN_EXTENSION } from '../../src/auth/audit.js';
import { canonicalJson } from '../../src/store/content.js';

const A = ik('3730210271');

describe.each(backends())('audit chain on %s', (_name, makeBackend) => {
  let backend: Backend;
  let g: SecuredGateway;
  const dir = tempDir('cg-audit-');
  type Verdict = { ok: boolean; events: number; signed: boolean; brokenAt?: string; reason?: string };
  const verify = async (): Promise<Verdict> => (await (await fetch(`${g.url}/admin/audit/$verify`, { headers: { Authorization: `Bearer ${g.tokens.coordinator}` } })).json()) as Verdict;
  const q = (sql: string, params?: unknown[]) => g.gw.store.db.query<Record<string, unknown>>(sql, params);

  beforeAll(async () => {
    fs.writeFileSync(path.join(dir, 'audit.key'), crypto.randomBytes(32));
    backend = makeBackend();
    await backend.prepare();
    g = await startSecuredGateway(backend, [[A, '0171']], { AUDIT_KEY_FILE: path.join(dir, 'audit.key') });
    for (let i = 0; i < 5; i++) expect((await g.call('/Patient?_count=2', g.tokens.coordinator)).status).toBe(200);
  });
  afterAll(async () => {
    await g.close();
    await backend.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('an untouched chain verifies, and its head is signed', async () => {
    const v = await verify();
    expect(v).toMatchObject({ ok: true, signed: true });
    expect(v.events).toBeGreaterThanOrEqual(5);
  });

  test('an altered history copy of an event is detected', async () => {
    const [row] = await q(`SELECT event_id FROM audit_chain ORDER BY seq LIMIT 1`);
    await q(`UPDATE resource_version SET content = replace(content, '"care-gateway"', '"elsewhere"') WHERE resource_type = 'AuditEvent' AND id = $1`, [row.event_id]);
    try {
      expect(await verify()).toMatchObject({ ok: false, brokenAt: row.event_id, reason: expect.stringMatching(/history copy/) });
    } finally {
      await q(`UPDATE resource_version SET content = replace(content, '"elsewhere"', '"care-gateway"') WHERE resource_type = 'AuditEvent' AND id = $1`, [row.event_id]);
    }
    expect((await verify()).ok).toBe(true);
  });

  test('removed search-index rows of an event are detected (it could no longer be found by patient or date)', async () => {
    const [row] = await q(`SELECT c.event_id, r.seq::text AS seq FROM audit_chain c JOIN resource r ON r.resource_type = 'AuditEvent' AND r.id = c.event_id ORDER BY c.seq LIMIT 1`);
    await q(`CREATE TABLE tamper_date AS SELECT * FROM idx_date WHERE resource_type = 'AuditEvent' AND resource_seq = $1::bigint`, [row.seq]);
    await q(`DELETE FROM idx_date WHERE resource_type = 'AuditEvent' AND resource_seq = $1::bigint`, [row.seq]);
    try {
      expect(await verify()).toMatchObject({ ok: false, brokenAt: row.event_id, reason: expect.stringMatching(/index rows/) });
    } finally {
      await q(`INSERT INTO idx_date SELECT * FROM tamper_date`);
      await q(`DROP TABLE tamper_date`);
    }
    expect((await verify()).ok).toBe(true);
  });

  test('removing the newest events (chain rows and events) is detected by the head', async () => {
    await q(`CREATE TABLE tamper_chain AS SELECT * FROM audit_chain WHERE seq = (SELECT max(seq) FROM audit_chain)`);
    await q(`DELETE FROM audit_chain WHERE seq = (SELECT seq FROM tamper_chain)`);
    try {
      expect(await verify()).toMatchObject({ ok: false, reason: expect.stringMatching(/head records/) });
    } finally {
      await q(`INSERT INTO audit_chain SELECT * FROM tamper_chain`);
      await q(`DROP TABLE tamper_chain`);
    }
    // the verify calls above are audited too: the chain grew, and verifies again
    expect((await verify()).ok).toBe(true);
  });

  test('a chain rewritten with every hash recomputed (and its head) is detected without the key', async () => {
    const rows = await q(`SELECT c.seq::text AS seq, c.event_id, r.content FROM audit_chain c JOIN resource r ON r.resource_type = 'AuditEvent' AND r.id = c.event_id ORDER BY c.seq`);
    let prev = '0'.repeat(64);
    for (const [i, row] of rows.entries()) {
      const e = JSON.parse(row.content as string) as Record<string, unknown>;
      if (i === 0) e.outcomeDesc = 'rewritten';
      const { extension: _x, meta: _m, ...rest } = e;
      const hash = crypto.createHash('sha256').update(prev).update(canonicalJson(rest)).digest('hex');
      const content = JSON.stringify({ ...e, extension: [{ url: CHAIN_EXTENSION, valueString: `${prev}:${hash}` }] });
      await q(`UPDATE resource SET content = $2 WHERE resource_type = 'AuditEvent' AND id = $1`, [row.event_id, content]);
      await q(`UPDATE resource_version SET content = $2 WHERE resource_type = 'AuditEvent' AND id = $1 AND version_id = 1`, [row.event_id, content]);
      await q(`UPDATE audit_chain SET prev = $2, hash = $3 WHERE seq = $1::bigint`, [row.seq, prev, hash]);
      prev = hash;
    }
    await q(`UPDATE audit_head SET length = $1, hash = $2 WHERE id = 1`, [rows.length, prev]);
    expect(await verify()).toMatchObject({ ok: false, reason: expect.stringMatching(/not signed by the audit key/) });
  });
});
