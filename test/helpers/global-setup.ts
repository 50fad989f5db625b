/** Runs once before all suites: says which backends run and whether the shared corpus is there, and builds dist/ for the child-process tests. */
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
  execSync('npx tsc -p tsconfig.build.json', { stdio: 'inherit' });
}
