/** Where the mapping files live: `mappings/` at the project root (found from this module, in src/ or dist/src/). */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let dir: string | undefined;

export function mappingsDir(): string {
  if (dir) return dir;
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(d, 'mappings')) && fs.existsSync(path.join(d, 'package.json'))) return (dir = path.join(d, 'mappings'));
    d = path.dirname(d);
  }
  throw new Error('mappings/ folder not found above ' + fileURLToPath(import.meta.url));
}
