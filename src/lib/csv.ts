// A spreadsheet reads a cell starting with one of these as a formula (CSV or formula injection).
// OWASP's list (= + - @ tab CR), with LF and NUL (ASVS 1.2.10) for good measure.
const FORMULA_TRIGGER = /^[=+\-@\t\r\n\0]/

/**
 * One RFC 4180 field, always quoted (quotes doubled): a spreadsheet set to a locale that separates
 * cells with `;` would otherwise split an unquoted field at each `;`. Text that a spreadsheet would
 * take for a formula is first prefixed with `'` (OWASP's advice), which makes the cell text;
 * numbers are quoted as they are written; null is an empty field.
 */
export function csvField(value: string | number | null): string {
  if (value === null) return '""'
  const text = typeof value === 'number' ? String(value) : FORMULA_TRIGGER.test(value) ? `'${value}` : value
  return `"${text.replaceAll('"', '""')}"`
}

/** One CSV record, CRLF-terminated as RFC 4180 asks. */
export function csvRecord(values: (string | number | null)[]): string {
  return `${values.map(csvField).join(',')}\r\n`
}
