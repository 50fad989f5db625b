/**
 * Benchmarks (npm run bench). Figures go to docs/benchmarks.md and issue notes with the command that produced them.
 *   npm run bench                 all of them, embedded store (PGlite) for the end-to-end part
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test npm run bench   end-to-end on PostgreSQL too
 *   npm run bench -- convert      only in-process conversion; `validate`, `json`, `mllp`, `social` likewise
 *   npm run bench -- start        serving after `npm start` on an existing embedded store
 */
import { benchConvert } from './convert.js';
import { benchValidate } from './validate.js';
import { benchJson } from './json.js';
import { benchMllp } from './mllp.js';
import { benchSocial } from './social.js';
import { benchApi } from './api.js';
import { benchStart } from './start.js';

const which = process.argv[2];
const run = async (): Promise<void> => {
  if (!which || which === 'convert') benchConvert();
  if (!which || which === 'validate') benchValidate();
  if (!which || which === 'json') benchJson();
  if (which === 'api') {
    if (!process.env.BENCH_DATABASE_URL) throw new Error('npm run bench -- api needs BENCH_DATABASE_URL (PostgreSQL); use api-pglite for the embedded store');
    await benchApi({ label: 'PostgreSQL', databaseUrl: process.env.BENCH_DATABASE_URL });
  }
  if (which === 'api-pglite') await benchApi({ label: 'PGlite' });
  if (which === 'start') await benchStart();
  if (which === 'social') {
    await benchSocial({ label: 'PGlite' });
    if (process.env.BENCH_DATABASE_URL) await benchSocial({ label: 'PostgreSQL', databaseUrl: process.env.BENCH_DATABASE_URL });
  }
  if (!which || which === 'mllp') {
    await benchMllp({ label: 'PGlite' });
    if (process.env.BENCH_DATABASE_URL) {
      await benchMllp({ label: 'PostgreSQL', databaseUrl: process.env.BENCH_DATABASE_URL });
      // HL7_ACK_AFTER=conversion needs PostgreSQL (the embedded store answers after the commit)
      await benchMllp({ label: 'PostgreSQL', databaseUrl: process.env.BENCH_DATABASE_URL, ackAfter: 'conversion' });
    }
  }
};
run().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
