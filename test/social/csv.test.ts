/**
 * The incremental CSV reader: the same records whatever the chunk boundaries (a quoted field, a doubled quote
 * or a CRLF split across chunks), record start lines for the report, BOM, blank lines, unclosed quotes.
 */
import { CsvReader, CsvError } from '../../src/social/csv.js';

function readAll(text: string, chunk: number, delimiter = ';') {
  const r = new CsvReader(delimiter);
  const out = [];
  for (let i = 0; i < text.length; i += chunk) out.push(...r.push(text.slice(i, i + chunk)));
  out.push(...r.end());
  return out;
}

const TEXT = '\ufeffa;b;c\r\n1;"x;y";"say ""hi"""\r\n\r\n2;"two\r\nlines";\r\n3;;last';

test('records and start lines are the same for every chunk size', () => {
  const expected = [
    { fields: ['a', 'b', 'c'], line: 1 },
    { fields: ['1', 'x;y', 'say "hi"'], line: 2 },
    { fields: ['2', 'two\r\nlines', ''], line: 4 },
    { fields: ['3', '', 'last'], line: 6 },
  ];
  for (const size of [1, 2, 3, 5, 7, 64, 10_000]) expect(readAll(TEXT, size)).toEqual(expected);
});

test('LF-only and CR-only line ends, a comma delimiter, and no final line break', () => {
  expect(readAll('a,b\n1,2\n', 4, ',').map((r) => r.fields)).toEqual([['a', 'b'], ['1', '2']]);
  expect(readAll('a,b\r1,2', 1, ',').map((r) => [r.line, ...r.fields])).toEqual([[1, 'a', 'b'], [2, '1', '2']]);
});

test('an unclosed quote is an error naming the line it opened on', () => {
  expect(() => readAll('a;b\n1;"never closed\n2;3\n', 4)).toThrow(CsvError);
  try {
    readAll('a;b\n1;"never closed\n2;3\n', 4);
  } catch (e) {
    expect((e as CsvError).line).toBe(2);
  }
});
