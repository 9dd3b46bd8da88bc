/** Ids are positive integers; anything else names no row (→ 404 at the caller, not 400). */
export function parseId(raw: string): number | null {
  return /^[1-9][0-9]{0,15}$/.test(raw) && Number.isSafeInteger(Number(raw)) ? Number(raw) : null
}
