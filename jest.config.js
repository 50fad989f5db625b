/**
 * Jest in ESM mode, TypeScript through ts-jest. `CG_TESTS=fast` (npm run test:unit) leaves out the suites whose
 * docblock says `@slow` (gateway processes, SIGKILL, worker threads, old schemas built from scratch); `npm test`
 * runs everything.
 */
import fs from 'node:fs';
import path from 'node:path';

function slowSuites(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return slowSuites(p);
    return e.name.endsWith('.test.ts') && /^\/\*\*[\s\S]*?@slow\b[\s\S]*?\*\//.test(fs.readFileSync(p, 'utf8').slice(0, 3000)) ? [p] : [];
  });
}
const leftOut = process.env.CG_TESTS === 'fast' ? slowSuites('test').map((p) => p.replace(/[.]/g, '\\.')) : [];

export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.json', diagnostics: { ignoreCodes: [151001] } }],
  },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', ...leftOut],
  testTimeout: 60000,
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  testSequencer: '<rootDir>/test/helpers/sequencer.js',
  maxWorkers: 2,
};
