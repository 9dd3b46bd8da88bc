const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])

/** RFC 9110 §9.2.1: methods that only read. Everything else is treated as a write. */
export function isSafeMethod(method: string): boolean {
  return SAFE_METHODS.has(method)
}

/** The D1 session bookmark a client sends back to read its own writes from any replica. */
export const BOOKMARK_HEADER = 'X-D1-Bookmark'
