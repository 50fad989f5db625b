/**
 * Array parameters are sent as PostgreSQL array literals built here (repository.ts `arrayLiteral`): whatever the
 * values hold, the database must read back exactly what was sent — through the JSON shortcut and the
 * element-by-element path alike — on both backends.
 */
import { openDb, type Db } from '../../src/store/db.js';
import { arrayLiteral } from '../../src/store/content.js';
import { PG_URL, blankPglite } from '../helpers/backends.js';

const tricky = [
  'plain',
  '',
  'NULL', // a string, not a null
  'null',
  'with "quotes" and \\ backslash',
  'a,comma {brace} }',
  'Õunapuu Žukova Šmidt ☃ 😀',
  'ends with backslash \\',
  'backslash then n: \\n (two characters)',
  ' leading and trailing spaces ',
  null,
];
const needsElementPath = ['line\nbreak', 'tab\there', 'bell\u0007', 'crlf\r\n'];

const targets: [string, () => Promise<{ db: Db; drop: () => Promise<void> }>][] = [['pglite', blankPglite]];
if (PG_URL) targets.push(['postgres', async () => ({ db: await openDb({ databaseUrl: PG_URL }), drop: async () => undefined })]);

describe.each(targets)('array literals on %s', (_name, open) => {
  let db: Db;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    ({ db, drop } = await open());
  });
  afterAll(async () => {
    await db.close();
    await drop();
  });
  const roundTrip = async (values: unknown[], type: string): Promise<unknown[]> =>
    (await db.query<{ a: unknown[] }>(`SELECT $1::${type}[] AS a`, [arrayLiteral(values)]))[0].a;

  test('text: quotes, backslashes, delimiters, the word NULL, non-ASCII and nulls come back as sent', async () => {
    expect(arrayLiteral(tricky).startsWith('{"plain","","NULL"')).toBe(true); // the JSON shortcut was taken
    expect(await roundTrip(tricky, 'text')).toEqual(tricky);
  });

  test('text with control characters (JSON would escape them as letters): element by element', async () => {
    const values = [...tricky, ...needsElementPath];
    expect(await roundTrip(values, 'text')).toEqual(values);
    for (const v of needsElementPath) expect(await roundTrip([v], 'text')).toEqual([v]);
  });

  test('numbers, including ones JSON cannot write, and an empty array', async () => {
    expect((await roundTrip([1, 2.5, -3, null, 1e21], 'numeric')).map((x) => (x === null ? null : Number(x)))).toEqual([1, 2.5, -3, null, 1e21]);
    expect((await roundTrip([Number.NaN, 1], 'numeric')).map((x) => Number(x))).toEqual([Number.NaN, 1]);
    expect(await roundTrip([], 'text')).toEqual([]);
    expect(await roundTrip([1, 2, 3], 'int')).toEqual([1, 2, 3]);
  });
});
