import { ApiError } from './api-error'
import { fromBase64Url, toBase64Url, utf8 } from './encoding'
import { isValidMac, macOf } from './hmac'

/**
 * A keyset position: the sort key and id of the row at the edge of a page, the direction to walk
 * from it, and the query it belongs to (so a cursor cannot be replayed against other filters).
 */
export interface CursorPosition {
  /** Sort key of the edge row (e.g. created_at in ms). */
  key: number
  /** Id of the edge row: the tie-breaker that makes the order total. */
  id: number
  direction: 'next' | 'previous'
  /** A short fingerprint of the list's path and filters. */
  scope: string
}

const MAX_CURSOR_LENGTH = 512

/** Encodes a position as `payload.mac` (base64url): opaque to clients and tamper-evident. */
export async function encodeCursor(position: CursorPosition, key: CryptoKey): Promise<string> {
  const direction = position.direction === 'next' ? 'n' : 'p'
  const payload = toBase64Url(utf8(JSON.stringify([position.key, position.id, direction, position.scope])))
  return `${payload}.${await macOf(payload, key)}`
}

/** Decodes and authenticates a cursor; anything forged, truncated or from another list → 400. */
export async function decodeCursor(cursor: string, scope: string, key: CryptoKey): Promise<CursorPosition> {
  const [payload, mac, extra] = cursor.split('.')
  if (payload === undefined || mac === undefined || extra !== undefined || cursor.length > MAX_CURSOR_LENGTH) {
    throw invalidCursor()
  }
  if (!(await isValidMac(payload, mac, key))) throw invalidCursor()
  const bytes = fromBase64Url(payload)
  const decoded: unknown = bytes === null ? null : parseJson(new TextDecoder().decode(bytes))
  if (!Array.isArray(decoded) || decoded.length !== 4) throw invalidCursor()
  const [sortKey, id, direction, cursorScope] = decoded as unknown[]
  const valid =
    Number.isSafeInteger(sortKey) &&
    Number.isSafeInteger(id) &&
    (direction === 'n' || direction === 'p') &&
    cursorScope === scope
  if (!valid) throw invalidCursor()
  return { key: sortKey as number, id: id as number, direction: direction === 'n' ? 'next' : 'previous', scope }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

function invalidCursor(): ApiError {
  return new ApiError(400, 'validation_failed', 'The cursor is invalid or belongs to another query.', {
    errors: [{ path: 'cursor', message: 'is invalid' }],
  })
}
