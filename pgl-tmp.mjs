import { PGlite } from '@electric-sql/pglite';
console.log(PGlite.defaultStartParams);
const t0 = performance.now();
const db = new PGlite(process.argv[2] + '/pgdata', { startParams: [...PGlite.defaultStartParams, '-c', 'shared_buffers=' + process.argv[3]] });
await db.waitReady; const r = Math.round(performance.now() - t0);
const s = await db.query("select current_setting('shared_buffers') sb");
await db.close(); console.log('ready', r, JSON.stringify(s.rows[0]));
