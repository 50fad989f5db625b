/**
 * Folders depend one way. `src/` is layered, lowest first; a file may import from its own folder and from folders
 * below it, never upward — which also rules out cycles between folders. Inside a folder, files form no cycle
 * either (type-only imports included: a cycle of types is still two files that must change together).
 */
import fs from 'node:fs';
import path from 'node:path';

const LAYERS = ['(base)', 'fhir', 'hl7v2', '(config)', 'county', 'store', 'mapping', 'careplan', '(checks)', 'auth', 'social', 'ingest', 'mllp', 'api', '(root)'];
/** Files at the top of src/ that are not the top: the log, the paths and the data-file reader (the bottom), the configuration, the write checks. */
const ROOT_FILES: Record<string, string> = { 'log.ts': '(base)', 'paths.ts': '(base)', 'data-file.ts': '(base)', 'config.ts': '(config)', 'write-checks.ts': '(checks)' };
/** The HL7 v2 message model stands alone: it reports problems as OperationOutcome issues, the gateway's one error model. */
const HL7V2_MAY_IMPORT = ['fhir/outcome.ts', 'fhir/types.ts'];

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}
const rel = (file: string) => path.relative('src', file);
const folderOf = (file: string) => {
  const parts = rel(file).split(path.sep);
  return parts.length > 1 ? parts[0] : (ROOT_FILES[parts[0]] ?? '(root)');
};
/** file → the project files it imports (static, side-effect and dynamic imports, re-exports; type-only ones included) */
const graph = new Map(
  files('src').map((f) => [
    f,
    [...fs.readFileSync(f, 'utf8').matchAll(/(?:(?:import|export)[^'";]*?from\s+|\bimport\s*\(?\s*)'(\.[^']+)'/g)].map((m) => path.normalize(path.join(path.dirname(f), m[1].replace(/\.js$/, '.ts')))),
  ]),
);

test('every src/ file is in a known layer and imports only its own folder or folders below it', () => {
  const bad: string[] = [];
  for (const [f, targets] of graph) {
    const from = folderOf(f);
    if (!LAYERS.includes(from)) bad.push(`${rel(f)}: folder ${from} is in no layer`);
    for (const t of targets) {
      const to = folderOf(t);
      if (to !== from && LAYERS.indexOf(to) > LAYERS.indexOf(from)) bad.push(`${rel(f)} -> ${rel(t)} (${from} is below ${to})`);
    }
  }
  expect(bad).toEqual([]);
});

test('src/hl7v2 (the message model, parse, decode, ACKs) imports nothing of the project but the error model', () => {
  const bad = [...graph].filter(([f]) => folderOf(f) === 'hl7v2').flatMap(([f, ts]) => ts.filter((t) => folderOf(t) !== 'hl7v2' && !HL7V2_MAY_IMPORT.includes(rel(t))).map((t) => `${rel(f)} -> ${rel(t)}`));
  expect(bad).toEqual([]);
});

test('no import cycle between files', () => {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const visit = (f: string, stack: string[]) => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') {
      cycles.push([...stack.slice(stack.indexOf(f)), f].map(rel).join(' -> '));
      return;
    }
    state.set(f, 'open');
    for (const t of graph.get(f) ?? []) visit(t, [...stack, f]);
    state.set(f, 'done');
  };
  for (const f of graph.keys()) visit(f, []);
  expect(cycles).toEqual([]);
});

test('the rules above see real imports (a planted upward import is caught)', () => {
  // guards the regular expression: if it stopped matching, every rule above would pass on an empty graph
  expect(graph.get(path.join('src', 'store', 'repository.ts'))?.length).toBeGreaterThan(3);
  const from = folderOf(path.join('src', 'fhir', 'x.ts'));
  const to = folderOf(path.join('src', 'api', 'fhir.ts'));
  expect(LAYERS.indexOf(to)).toBeGreaterThan(LAYERS.indexOf(from));
});

test('a src/ file longer than 470 lines says at its top why it is one file', () => {
  const long = [...graph.keys()]
    .map((f) => ({ f, text: fs.readFileSync(f, 'utf8') }))
    .filter(({ text }) => text.split('\n').length > 470 && !/^\/\*\*[\s\S]*?Longer than[\s\S]*?\*\//.test(text.slice(0, 4000)))
    .map(({ f }) => rel(f));
  expect(long).toEqual([]);
});
