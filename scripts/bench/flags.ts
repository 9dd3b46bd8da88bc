// The benchmarks' flag values: positive numbers and comma-separated lists.

/** A positive number from a flag or environment variable, or `fallback` when unset; exits 2 on anything else. */
export function positiveNumber(
  tool: string,
  flag: { name: string; raw: string | undefined; fallback: number; integer?: boolean },
): number {
  const { name, raw, fallback, integer = true } = flag
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!(value > 0) || (integer && !Number.isInteger(value))) {
    console.error(`${tool}: ${name} must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return value
}

/** `a, b,,c` → ['a', 'b', 'c']; undefined when the flag is not given. */
export function commaList(raw: string | undefined): string[] | undefined {
  return raw
    ?.split(',')
    .map((item) => item.trim())
    .filter(Boolean)
}
