import { describe, expect, it } from 'vitest'
import { csvField, csvRecord } from './csv'

describe('csvField', () => {
  // Every field is quoted (RFC 4180 allows it for any field): a spreadsheet in a locale that
  // separates cells with `;` would otherwise split an unquoted field at each `;`.
  it.for([
    ['plain text', 'alice@example.com', '"alice@example.com"'],
    ['an empty string', '', '""'],
    ['spaces (kept)', ' Alice Smith ', '" Alice Smith "'],
    ['a comma', 'Smith, Alice', '"Smith, Alice"'],
    ['a double quote', 'Alice "Al" Smith', '"Alice ""Al"" Smith"'],
    ['only a double quote', '"', '""""'],
    ['a LF', 'line one\nline two', '"line one\nline two"'],
    ['a CR', 'line one\rline two', '"line one\rline two"'],
    ['a CRLF', 'line one\r\nline two', '"line one\r\nline two"'],
    ['every special character', 'a,"b"\r\nc', '"a,""b""\r\nc"'],
    ['a single quote (not special)', "O'Brien", `"O'Brien"`],
    ['a semicolon, which some locales read as a separator', 'a;b', '"a;b"'],
    ['a tab (not at the start)', 'a\tb', '"a\tb"'],
    ['unicode', 'Zoë 🎉 مرحبا e\u0301', '"Zoë 🎉 مرحبا e\u0301"'],
  ] as const)('renders %s', ([, value, expected]) => {
    expect(csvField(value)).toBe(expected)
  })

  // OWASP CSV injection: a cell a spreadsheet would read as a formula gets a leading `'`, then
  // the quoting every field gets.
  it.for([
    ['=', '=HYPERLINK("http://evil.example","x")', `"'=HYPERLINK(""http://evil.example"",""x"")"`],
    ['=', "=cmd|' /C calc'!A0", `"'=cmd|' /C calc'!A0"`],
    ['+', '+1+2', `"'+1+2"`],
    ['-', '-2+3', `"'-2+3"`],
    ['@', '@SUM(1,2)', `"'@SUM(1,2)"`],
    ['a tab', '\t=1+1', `"'\t=1+1"`],
    ['a CR', '\r=1+1', `"'\r=1+1"`],
    ['a LF', '\n=1+1', `"'\n=1+1"`],
    ['a NUL', '\0=1+1', `"'\0=1+1"`],
    ['= alone', '=', `"'="`],
    ['- in an address', '-list@example.com', `"'-list@example.com"`],
  ] as const)('neutralises text starting with %s', ([, value, expected]) => {
    expect(csvField(value)).toBe(expected)
  })

  it.for([
    ['a formula character later on', 'a=b+c-d@e', '"a=b+c-d@e"'],
    ['a leading single quote (already text)', "'=1+1", `"'=1+1"`],
    ['a leading space', ' =1', '" =1"'],
  ] as const)('leaves %s as it is', ([, value, expected]) => {
    expect(csvField(value)).toBe(expected)
  })

  it('renders null as an empty field', () => {
    expect(csvField(null)).toBe('""')
  })

  it.for([
    [0, '"0"'],
    [42, '"42"'],
    [-7, '"-7"'],
    [1.5, '"1.5"'],
  ] as const)('renders the number %d as %j, never neutralised', ([value, expected]) => {
    expect(csvField(value)).toBe(expected)
  })
})

describe('csvRecord', () => {
  it('joins fields with commas and ends with CRLF', () => {
    expect(csvRecord(['email', 'name', 'status', 'created_at'])).toBe('"email","name","status","created_at"\r\n')
  })

  it('quotes every field', () => {
    expect(csvRecord(['a@example.com', 'Smith, "Al"\nJr', 'active', 3, null])).toBe(
      '"a@example.com","Smith, ""Al""\nJr","active","3",""\r\n',
    )
  })

  it('renders an empty record as a bare CRLF', () => {
    expect(csvRecord([])).toBe('\r\n')
  })

  it('keeps nulls as empty positions so columns stay aligned', () => {
    expect(csvRecord([null, null, null])).toBe('"","",""\r\n')
  })

  it('neutralises each text field on its own and leaves numbers alone', () => {
    expect(csvRecord([-1, '-1', '=A1', 'ok'])).toBe(`"-1","'-1","'=A1","ok"\r\n`)
  })

  it('round-trips through a minimal RFC 4180 parser', () => {
    const values = ['x,y', 'say "hi"', 'multi\r\nline', 'plain', 'ünïcödé 👩‍💻', '', 'a;b']
    expect(parseCsvRecord(csvRecord(values))).toEqual(values)
  })
})

/** Parses one CRLF-terminated RFC 4180 record of quoted fields; just enough to check csvRecord's output. */
function parseCsvRecord(text: string): string[] {
  expect(text.endsWith('\r\n')).toBe(true)
  const input = text.slice(0, -2)
  const fields: string[] = []
  let i = 0
  while (i < input.length) {
    expect(input[i]).toBe('"')
    let value = ''
    i += 1
    while (i < input.length) {
      if (input[i] === '"' && input[i + 1] === '"') {
        value += '"'
        i += 2
      } else if (input[i] === '"') {
        i += 1
        break
      } else {
        value += input[i]
        i += 1
      }
    }
    fields.push(value)
    if (input[i] === ',') i += 1
  }
  return fields
}
