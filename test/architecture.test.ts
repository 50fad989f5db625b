/**
 * Folders depend one way. `src/` is layered, lowest first; a file may import from its own folder and from folders
 * below it. The imports that still go upward are listed here, each with why it is there — they are to be removed, and
 * the list may only shrink: a new upward import (or a new cycle between folders, which needs one) fails this test.
 */
import fs from 'node:fs';
import path from 'node:path';

const LAYERS = ['(base)', 'fhir', '(config)', 'store', 'mapping', 'careplan', '(checks)', 'auth', 'social', 'ingest', 'mllp', 'api', '(root)'];
/** Files at the top of src/ that are not the top: the log (the bottom), the configuration, the write checks. */
const ROOT_FILES: Record<string, string> = { 'log.ts': '(base)', 'config.ts': '(config)', 'write-checks.ts': '(checks)' };

/** from → to: the upward imports of today (folder level), to be removed. */
const KNOWN_UPWARD: Record<string, string> = {
  'fhir -> mapping': 'fhir/definitions and profiles find their folders through mapping/files.ts (a neutral paths module is due)',
  'mapping -> careplan': 'the HL7 v2 mapping builds team changes and municipality Organizations with careplan types and the directory',
  'mapping -> ingest': 'the mapping reads the HL7 v2 message model, which lives in ingest/hl7v2 (due: src/hl7v2/)',
  'auth -> ingest': 'auth/hl7-callers converts a message to see whom it is about',
  'ingest -> api': 'FHIR Bundle execution lives in api/bundle.ts (due: ingest/fhir/)',
};

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}
const folderOf = (file: string) => {
  const rel = path.relative('src', file.replace(/\.js$/, '.ts')).split(path.sep);
  return rel.length > 1 ? rel[0] : (ROOT_FILES[rel[0]] ?? '(root)');
};

test('src/ folders import only downward, but for the known exceptions (which may only shrink)', () => {
  const upward = new Map<string, string[]>();
  for (const f of files('src')) {
    const from = folderOf(f);
    for (const m of fs.readFileSync(f, 'utf8').matchAll(/(?:import|export)[^'";]*?from\s+'(\.[^']+)'/g)) {
      const to = folderOf(path.normalize(path.join(path.dirname(f), m[1])));
      if (to === from) continue;
      expect([f, LAYERS.includes(from), LAYERS.includes(to)]).toEqual([f, true, true]);
      if (LAYERS.indexOf(to) > LAYERS.indexOf(from)) upward.set(`${from} -> ${to}`, [...(upward.get(`${from} -> ${to}`) ?? []), f]);
    }
  }
  const fresh = [...upward.keys()].filter((k) => !(k in KNOWN_UPWARD)).map((k) => `${k} (${upward.get(k)!.join(', ')})`);
  expect(fresh).toEqual([]);
  // an exception that no longer exists comes off the list
  expect(Object.keys(KNOWN_UPWARD).filter((k) => !upward.has(k))).toEqual([]);
});
