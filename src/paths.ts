/**
 * Where the project's data folders are: `mappings/` and `profiles/` at the project root, found from this module
 * (which runs from src/ under the tests and from dist/src/ when built). Every layer reads its files through here.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The folder holding package.json and mappings/. */
export function projectRoot(): string {
  if (root) return root;
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(d, 'mappings')) && fs.existsSync(path.join(d, 'package.json'))) return (root = d);
    d = path.dirname(d);
  }
  throw new Error('mappings/ folder not found above ' + fileURLToPath(import.meta.url));
}

export const mappingsDir = (): string => path.join(projectRoot(), 'mappings');
export const profilesDir = (): string => path.join(projectRoot(), 'profiles');

/**
 * Writes a file the build derives: whole or not at all (a reader never sees half of it), creating its folder; with
 * `replaces`, the older files of that name prefix in the folder (an earlier source's digest) go.
 */
export function writeDerivedFile(file: string, data: string | Uint8Array, replaces?: string): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(`${file}.tmp`, data);
  fs.renameSync(`${file}.tmp`, file);
  const name = path.basename(file);
  // (what this file belongs to stays: schema-validators-<digest>.cjs beside its .cjs.v8cache)
  if (replaces) for (const f of fs.readdirSync(dir)) if (f.startsWith(replaces) && !f.startsWith(name) && !name.startsWith(f) && !f.endsWith('.tmp')) fs.rmSync(path.join(dir, f), { force: true });
}

/**
 * The text a module was built from, for digests of what it derives: its TypeScript source when the package has one
 * (src/x.ts for dist/src/x.js), else the file itself — so the build and the tests (which run the sources) name a
 * derived file alike.
 */
export function moduleSource(moduleUrl: string): Buffer {
  const file = fileURLToPath(moduleUrl);
  const ts = file.replace(/([\\/])dist\1(src\1.*)\.js$/, '$1$2.ts');
  return fs.readFileSync(ts !== file && fs.existsSync(ts) ? ts : file);
}
