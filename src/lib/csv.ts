// A spreadsheet reads a cell starting with one of these as a formula (CSV or formula injection).
// OWASP's list (= + - @ tab CR), with LF and NUL (ASVS 1.2.10) for good measure.
const FORMULA_TRIGGER = /^[=+\-@\t\r\n\0]/

/**
 * One RFC 4180 field: quoted when it holds a comma, quote, CR or LF; quotes doubled. Text that a
 * spreadsheet would take for a formula is first prefixed with `'` (OWASP's advice), which makes
 * the cell text; numbers are written as they are.
 */
export function csvField(value: string | number | null): string {
  if (value === null) return ''
  const text = typeof value === 'number' ? String(value) : FORMULA_TRIGGER.test(value) ? `'${value}` : value
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

/** One CSV record, CRLF-terminated as RFC 4180 asks. */
export function csvRecord(values: (string | number | null)[]): string {
  return `${values.map(csvField).join(',')}\r\n`
}
