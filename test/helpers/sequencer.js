/**
 * The order the suites start in. With the timings of an earlier run, Jest's own order stands (failed first, then
 * longest first). Without them — a fresh clone — Jest would go by file size; here the largest suite that needs an
 * embedded store goes first, so that one worker makes the store templates (~6 s on a new machine) while the other
 * runs the suites that need no store, and the other store suites follow, largest first.
 */
import fs from 'node:fs';
import TestSequencer from '@jest/test-sequencer';

const Base = TestSequencer.default ?? TestSequencer;
const NEEDS_STORE = /helpers\/(backends|gateway|auth)\.js/;

export default class StoreTemplatesFirst extends Base {
  sort(tests) {
    const sorted = super.sort(tests);
    if (sorted.some((t) => t.duration != null)) return sorted;
    const needs = new Map(sorted.map((t) => [t, NEEDS_STORE.test(fs.readFileSync(t.path, 'utf8'))]));
    const store = sorted.filter((t) => needs.get(t));
    return [...store.slice(0, 1), ...sorted.filter((t) => !needs.get(t)), ...store.slice(1)];
  }
}
