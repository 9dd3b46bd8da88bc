import type { Context } from 'hono'
import { toBase64Url, utf8 } from '../lib/encoding'

/** Public GETs: caches may store them but must revalidate, so a write is visible on the next read. */
export const PUBLIC_REVALIDATE = 'public, no-cache'

/** Responses that depend on who is asking. */
export const PRIVATE_NO_STORE = 'private, no-store'

/** Responses no cache may keep at all: anything carrying tokens (RFC 6749 §5.1), problems, health. */
export const NO_STORE = 'no-store'

/** A strong ETag: a digest of the exact representation, so any visible change changes it. */
async function strongEtag(body: string): Promise<string> {
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
 * Sets a strong ETag for `value` (as c.json will serialise it) and the Cache-Control (public
 * revalidation unless told); true when the client already holds this exact representation and
 * should get 304.
 */
export function isNotModified(c: Context, value: unknown, cacheControl = PUBLIC_REVALIDATE): Promise<boolean> {
  return isBodyNotModified(c, JSON.stringify(value), cacheControl)
}

/** isNotModified() for a body already serialised (the Atom feed). */
export async function isBodyNotModified(c: Context, body: string, cacheControl = PUBLIC_REVALIDATE): Promise<boolean> {
  const etag = await strongEtag(body)
  c.header('ETag', etag)
  c.header('Cache-Control', cacheControl)
  return matchesIfNoneMatch(c.req.header('if-none-match'), etag)
}
