import { z } from '@hono/zod-openapi'
import type { Config } from '../config'
import type { KeysetWindow } from '../db/keyset'
import { decodeCursor, encodeCursor } from '../lib/cursors'
import type { CursorPosition } from '../lib/cursors'
import { toBase64Url, utf8 } from '../lib/encoding'
import { derivedHmacKey } from '../lib/hmac'

const MAX_PAGE_SIZE = 100

export const PaginationQuery = z.object({
  cursor: z.string().max(512).optional().openapi({ description: 'Opaque cursor from `next`/`previous`' }),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(MAX_PAGE_SIZE)
    .default(20)
    .openapi({ type: 'integer', minimum: 1, maximum: MAX_PAGE_SIZE, default: 20 }),
})

/** `{results, next, previous}` for a list of `item`. */
export function pageSchema<T extends z.ZodType>(item: T, name: string) {
  return z
    .object({
      results: z.array(item),
      next: z.string().nullable().openapi({ description: 'Absolute URL of the next page, or null' }),
      previous: z.string().nullable().openapi({ description: 'Absolute URL of the previous page, or null' }),
    })
    .openapi(name)
}

export interface Page<T> {
  results: T[]
  next: string | null
  previous: string | null
}

/** A validated page request: where to start and how many rows. */
export interface PageRequest extends KeysetWindow {
  scope: string
  url: URL
  key: CryptoKey
}

/** Reads `cursor`/`limit` for the list at `requestUrl`; a forged cursor → 400. */
export async function readPageRequest(
  requestUrl: string,
  query: { cursor?: string | undefined; limit: number },
  config: Config,
): Promise<PageRequest> {
  const url = new URL(requestUrl)
  const [scope, key] = await Promise.all([scopeOf(url), derivedHmacKey(config.tokens.secret, 'cursor')])
  const position = query.cursor === undefined ? null : await decodeCursor(query.cursor, scope, key)
  return { position, limit: query.limit, scope, url, key }
}

/**
 * Turns `limit + 1` rows fetched in walk order into a page with absolute next/previous URLs.
 * The extra row only says whether there is more; it is never returned.
 */
export async function toPage<Row, T>(
  rows: Row[],
  request: PageRequest,
  edgeOf: (row: Row) => { key: number; id: number },
  view: (row: Row) => T,
): Promise<Page<T>> {
  const hasMore = rows.length > request.limit
  const pageRows = rows.slice(0, request.limit)
  const backwards = request.position?.direction === 'previous'
  if (backwards) pageRows.reverse()
  const first = pageRows[0]
  const last = pageRows[pageRows.length - 1]
  const hasNext = backwards ? request.position !== null : hasMore
  const hasPrevious = backwards ? hasMore : request.position !== null
  return {
    results: pageRows.map(view),
    next: hasNext && last !== undefined ? await pageUrl(request, edgeOf(last), 'next') : null,
    previous: hasPrevious && first !== undefined ? await pageUrl(request, edgeOf(first), 'previous') : null,
  }
}

async function pageUrl(
  request: PageRequest,
  edge: { key: number; id: number },
  direction: CursorPosition['direction'],
): Promise<string> {
  const url = new URL(request.url)
  const cursor = await encodeCursor({ ...edge, direction, scope: request.scope }, request.key)
  url.searchParams.set('cursor', cursor)
  url.searchParams.set('limit', String(request.limit))
  return url.toString()
}

// Binds a cursor to its list and filters: a cursor from /posts?author=1 is refused on /posts.
async function scopeOf(url: URL): Promise<string> {
  const filters = [...url.searchParams.entries()]
    .filter(([name]) => name !== 'cursor' && name !== 'limit')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  const digest = await crypto.subtle.digest('SHA-256', utf8(`${url.pathname}?${new URLSearchParams(filters)}`))
  return toBase64Url(new Uint8Array(digest).slice(0, 9))
}
