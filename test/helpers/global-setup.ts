/** Runs once before all suites: says which backends run, and builds dist/ for the child-process tests. */
import { execSync } from 'node:child_process';

export default async function globalSetup(): Promise<void> {
  if (!process.env.TEST_DATABASE_URL) {
    process.stdout.write(
      '\n[care-gateway] TEST_DATABASE_URL is not set: the PostgreSQL variants of the store, API and durability suites are SKIPPED; ' +
        'they run on the embedded store (PGlite) only. .ci/run sets it.\n',
    );
  } else {
    process.stdout.write(`\n[care-gateway] PostgreSQL suites run against ${process.env.TEST_DATABASE_URL}\n`);
  }
  execSync('npx tsc -p tsconfig.build.json', { stdio: 'inherit' });
}
