/**
 * Runs once before all suites: says which backends run and whether the shared corpus is there, and builds dist/ for
 * the child-process tests, and what the build derives from the definitions, when a source is newer than the last build
 * (`npm install` builds it; a build takes ~13 s).
 */
import { execSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** The shared corpus directory, decided as test/helpers/corpus.ts does (Jest loads this file without its module mapping). */
const CORPUS_ENV = 'CG_CORPUS_DIR';
const corpusDir = (): string | undefined => {
  const dir = process.env[CORPUS_ENV] ? path.resolve(process.env[CORPUS_ENV]) : undefined;
  return dir && fs.existsSync(dir) && fs.statSync(dir).isDirectory() ? dir : undefined;
};

export default async function globalSetup(): Promise<void> {
  if (!process.env.TEST_DATABASE_URL) {
    process.stdout.write(
      '\n[care-gateway] TEST_DATABASE_URL is not set: the PostgreSQL variants of the store, API and durability suites are SKIPPED; ' +
        'they run on the embedded store (PGlite) only. .ci/run sets it.\n',
    );
  } else {
    process.stdout.write(`\n[care-gateway] PostgreSQL suites run against ${process.env.TEST_DATABASE_URL}\n`);
  }
  const corpus = corpusDir();
  if (!corpus) {
    const set = process.env[CORPUS_ENV] ? `${CORPUS_ENV}=${process.env[CORPUS_ENV]} is not a directory` : `${CORPUS_ENV} is not set`;
    process.stdout.write(
      `[care-gateway] ${set}: the shared-corpus suites are SKIPPED; to run them set ${CORPUS_ENV} to the shared corpus directory. .ci/run sets it when CI provides the corpus.\n`,
    );
  } else {
    process.stdout.write(`[care-gateway] shared-corpus suites run against ${corpus}\n`);
  }
  if (buildIsStale()) execSync('npm run build --silent', { stdio: 'inherit' });
}

function newest(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...fs.readdirSync(p).map((e) => newest(path.join(p, e))));
}

/**
 * Is any source of dist/ newer than its last build (tsc rewrites every output, so main.js dates the build)? The
 * mapping files count too: the build records them checked (src/data-file.ts).
 */
function buildIsStale(): boolean {
  const built = path.resolve('dist/src/main.js');
  if (!fs.existsSync(built)) return true;
  const sources = ['src', 'bench', 'mappings', 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json'].filter((p) => fs.existsSync(p));
  return Math.max(...sources.map(newest)) > fs.statSync(built).mtimeMs;
}
