import type { Context } from 'hono'
import { toBase64Url, utf8 } from '../lib/encoding'

/** Public GETs: caches may store them but must revalidate, so a write is visible on the next read. */
export const PUBLIC_REVALIDATE = 'public, no-cache'

/** Responses that depend on who is asking. */
export const PRIVATE_NO_STORE = 'private, no-store'

/** A strong ETag: a digest of the exact representation, so any visible change changes it. */
export async function strongEtag(body: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', utf8(body)))
  return `"${toBase64Url(digest.slice(0, 18))}"`
}

/** RFC 9110 §13.1.2: If-None-Match uses the weak comparison, and `*` matches any current entity. */
export function matchesIfNoneMatch(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false
  const opaque = (tag: string) => tag.trim().replace(/^W\//, '')
  return header.split(',').some((candidate) => candidate.trim() === '*' || opaque(candidate) === opaque(etag))
}

/**
 * Sends `value` as JSON with a strong ETag and public revalidation headers, or 304 with no body
 * when the client already holds this exact representation.
 */
export async function jsonWithEtag<T>(c: Context, value: T): Promise<Response> {
  const body = JSON.stringify(value)
  const etag = await strongEtag(body)
  c.header('ETag', etag)
  c.header('Cache-Control', PUBLIC_REVALIDATE)
  if (matchesIfNoneMatch(c.req.header('if-none-match'), etag)) return c.body(null, 304)
  return c.body(body, 200, { 'Content-Type': 'application/json' })
}
