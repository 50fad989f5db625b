/**
 * The one error type and its one table: every category maps to an HTTP status, an OperationOutcome issue code
 * and HL7 MSA-1/ERR-3 codes, and the README's error table says exactly what the code does.
 */
import fs from 'node:fs';
import { CATEGORIES, OutcomeError, toOutcomeError, type Category } from '../../src/fhir/outcome.js';

test('the README error table and CATEGORIES agree row for row', () => {
  const readme = fs.readFileSync('README.md', 'utf8');
  const table = readme.slice(readme.indexOf('<!-- error-table:start -->'), readme.indexOf('<!-- error-table:end -->'));
  const rows = table
    .split('\n')
    .filter((l) => l.startsWith('| `CG-'))
    .map((l) => l.split('|').slice(1, -1).map((c) => c.trim().replace(/`/g, '')));
  const fromCode = Object.entries(CATEGORIES).map(([cat, r]) => [r.code, cat, String(r.http), r.issueCode, r.msa1, r.err3]);
  expect(rows).toEqual(fromCode);
});

test('an OutcomeError carries a complete OperationOutcome saying where', () => {
  const e = new OutcomeError('invalid', 'isikukood checksum fails', 'PID-3.1');
  expect(e.status).toBe(422);
  expect(e.outcome).toMatchObject({
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: 'invalid', expression: ['PID-3.1'], details: { coding: [{ code: 'CG-INVALID' }] } }],
  });
});

test('unknown errors become a fault without leaking their message', () => {
  const e = toOutcomeError(new Error('relation "secret_table" does not exist'));
  expect(e.category).toBe<Category>('fault');
  expect(JSON.stringify(e.outcome)).not.toContain('secret_table');
});
