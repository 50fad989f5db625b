/**
 * The shared corpus: real HL7 v2 messages and FHIR R4 examples from public projects, kept outside this repository.
 * Its directory is named by the environment variable CG_CORPUS_DIR (`hl7v2/` and `fhir/` below it); there is no
 * default. Without it the suites that read the corpus are skipped, and the test run says so once at the start
 * (test/helpers/global-setup.ts). `.ci/run` sets it when CI provides the corpus.
 */
import fs from 'node:fs';
import path from 'node:path';

export const CORPUS_ENV = 'CG_CORPUS_DIR';

/** The corpus directory (or `sub` below it), absolute; undefined when CG_CORPUS_DIR is unset or the directory is missing. */
export function corpusDir(sub?: string): string | undefined {
  const root = process.env[CORPUS_ENV];
  if (!root) return undefined;
  const dir = path.resolve(root, sub ?? '');
  return fs.existsSync(dir) && fs.statSync(dir).isDirectory() ? dir : undefined;
}

/** The corpus directory (or `sub`) inside a corpus test, where it is known to be there. */
export function requireCorpusDir(sub?: string): string {
  const dir = corpusDir(sub);
  if (!dir) throw new Error(`the shared corpus${sub ? ` (${sub})` : ''} is not there: set ${CORPUS_ENV}`);
  return dir;
}

/** Files below the corpus directory `sub` whose names end with `ext`, relative to it and sorted. */
export function corpusFiles(sub: string, ext: string): string[] {
  return (fs.readdirSync(requireCorpusDir(sub), { recursive: true, encoding: 'utf8' }) as string[]).filter((f) => f.endsWith(ext)).sort();
}

const SKIPPED = `needs the shared corpus (set ${CORPUS_ENV})`;

/**
 * A describe block that reads the corpus directory `sub`. Without it the block's body is not even run (so it may
 * list corpus files at collection time, e.g. for test.each): one skipped test stands in for it.
 */
export function describeCorpus(sub: string, name: string, fn: () => void): void {
  if (corpusDir(sub)) describe(name, fn);
  else describe.skip(name, () => test(SKIPPED, () => undefined));
}

/** A single test that reads the corpus directory `sub`: skipped without it. */
export function testCorpus(sub: string, name: string, fn: jest.ProvidesCallback, timeout?: number): void {
  if (corpusDir(sub)) test(name, fn, timeout);
  else test.skip(`${name} — ${SKIPPED}`, () => undefined);
}
