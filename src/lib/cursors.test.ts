import { describe, expect, it } from 'vitest'
import { ApiError } from './api-error'
import { decodeCursor, encodeCursor } from './cursors'
import type { CursorPosition } from './cursors'
import { toBase64Url, utf8 } from './encoding'
import { derivedHmacKey, macOf } from './hmac'

const SECRET = new TextEncoder().encode('a-test-secret-of-at-least-32-bytes!!')
const OTHER_SECRET = new TextEncoder().encode('another-secret-also-at-least-32-bytes!!')
const SCOPE = 'c2NvcGUtb25lLXg'
const OTHER_SCOPE = 'c2NvcGUtdHdvLXg'

const key = await derivedHmacKey(SECRET, 'cursor')

const position: CursorPosition = { key: 1_767_225_600_123, id: 42, direction: 'next', scope: SCOPE }

/** A cursor whose MAC is valid for `payload`: what only the server (holding the key) can make. */
async function signedCursor(payload: unknown): Promise<string> {
  const encoded = toBase64Url(utf8(JSON.stringify(payload)))
  return `${encoded}.${await macOf(encoded, key)}`
}

/** Replaces the character at `index` with a different base64url character. */
function flipCharAt(text: string, index: number): string {
  const replacement = text[index] === 'A' ? 'B' : 'A'
  return `${text.slice(0, index)}${replacement}${text.slice(index + 1)}`
}

async function expectInvalidCursor(cursor: string, scope = SCOPE, cursorKey = key): Promise<void> {
  const error = await decodeCursor(cursor, scope, cursorKey).then(
    () => undefined,
    (err: unknown) => err,
  )
  expect(error).toBeInstanceOf(ApiError)
  expect(error).toMatchObject({ status: 400, code: 'validation_failed' })
  expect((error as ApiError).extra.errors?.[0]?.path).toBe('cursor')
}

describe('encodeCursor / decodeCursor', () => {
  it.for(['next', 'previous'] as const)('round-trips a %s position', async (direction) => {
    const cursor = await encodeCursor({ ...position, direction }, key)
    expect(await decodeCursor(cursor, SCOPE, key)).toEqual({ ...position, direction })
  })

  it('produces an opaque, URL-safe payload.mac string', async () => {
    const cursor = await encodeCursor(position, key)
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/)
    expect(cursor).not.toContain(String(position.id))
  })

  it('round-trips the largest safe integers', async () => {
    const edge = { ...position, key: Number.MAX_SAFE_INTEGER, id: Number.MAX_SAFE_INTEGER }
    expect(await decodeCursor(await encodeCursor(edge, key), SCOPE, key)).toEqual(edge)
  })

  it('is deterministic for one key and differs between keys', async () => {
    const otherKey = await derivedHmacKey(OTHER_SECRET, 'cursor')
    expect(await encodeCursor(position, key)).toBe(await encodeCursor(position, key))
    expect(await encodeCursor(position, otherKey)).not.toBe(await encodeCursor(position, key))
  })
})

describe('Security: decodeCursor refuses anything it did not issue for this list', () => {
  it('refuses a payload changed under its MAC', async () => {
    const [, mac] = (await encodeCursor(position, key)).split('.')
    const otherPayload = toBase64Url(utf8(JSON.stringify([position.key, position.id + 1, 'n', SCOPE])))
    await expectInvalidCursor(`${otherPayload}.${mac}`)
  })

  it('refuses a payload with one character flipped', async () => {
    const cursor = await encodeCursor(position, key)
    await expectInvalidCursor(flipCharAt(cursor, 3))
  })

  it('refuses a MAC with one character flipped', async () => {
    const cursor = await encodeCursor(position, key)
    await expectInvalidCursor(flipCharAt(cursor, cursor.indexOf('.') + 1))
  })

  it('refuses every spelling of its MAC but the canonical one (unused trailing base64 bits)', async () => {
    const cursor = await encodeCursor(position, key)
    const last = cursor.at(-1)!
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const sameBytes = [...alphabet].filter(
      (c) => c !== last && alphabet.indexOf(c) >> 4 === alphabet.indexOf(last) >> 4,
    )
    expect(sameBytes.length).toBeGreaterThan(0)
    for (const other of sameBytes) await expectInvalidCursor(`${cursor.slice(0, -1)}${other}`)
  })

  it('refuses a MAC that is not base64url', async () => {
    const [payload] = (await encodeCursor(position, key)).split('.')
    await expectInvalidCursor(`${payload}.not+base64/url!`)
  })

  it.for([
    ['the last 3 characters cut', (cursor: string) => cursor.slice(0, -3)],
    ['the MAC cut off after the dot', (cursor: string) => cursor.slice(0, cursor.indexOf('.') + 1)],
    ['only the payload', (cursor: string) => cursor.slice(0, cursor.indexOf('.'))],
    ['the payload cut off', (cursor: string) => cursor.slice(cursor.indexOf('.'))],
  ] as const)('refuses a truncated cursor (%s)', async ([, truncate]) => {
    await expectInvalidCursor(truncate(await encodeCursor(position, key)))
  })

  it('refuses a cursor with 3 segments', async () => {
    const cursor = await encodeCursor(position, key)
    await expectInvalidCursor(`${cursor}.${cursor.split('.')[1]}`)
  })

  it.for(['', '.', 'garbage', 'a.b', '...'])('refuses the string %j', async (cursor) => {
    await expectInvalidCursor(cursor)
  })

  it('refuses a cursor issued for another list (scope)', async () => {
    await expectInvalidCursor(await encodeCursor(position, key), OTHER_SCOPE)
  })

  it('refuses a cursor signed with another secret', async () => {
    const foreignKey = await derivedHmacKey(OTHER_SECRET, 'cursor')
    await expectInvalidCursor(await encodeCursor(position, foreignKey))
  })

  it('refuses a cursor signed with the key of another purpose', async () => {
    const unsubscribeKey = await derivedHmacKey(SECRET, 'unsubscribe')
    await expectInvalidCursor(await encodeCursor(position, unsubscribeKey))
  })

  it.for([
    ['a fractional id', [position.key, 1.5, 'n', SCOPE]],
    ['a string id', [position.key, '42', 'n', SCOPE]],
    ['an unsafe integer id', [position.key, 2 ** 53, 'n', SCOPE]],
    ['a null id', [position.key, null, 'n', SCOPE]],
    ['a fractional key', [1.25, 42, 'n', SCOPE]],
    ['an unknown direction', [position.key, 42, 'x', SCOPE]],
    ['a missing element', [position.key, 42, 'n']],
    ['an extra element', [position.key, 42, 'n', SCOPE, 'more']],
    ['an object', { key: position.key, id: 42, direction: 'n', scope: SCOPE }],
  ] as const)('refuses a correctly signed payload with %s', async ([, payload]) => {
    await expectInvalidCursor(await signedCursor(payload))
  })

  it('refuses a correctly signed payload that is not JSON', async () => {
    const encoded = toBase64Url(utf8('[1, 2, "n"'))
    await expectInvalidCursor(`${encoded}.${await macOf(encoded, key)}`)
  })

  it('refuses a correctly signed cursor longer than 512 characters', async () => {
    const longScope = 's'.repeat(400)
    const cursor = await signedCursor([position.key, position.id, 'n', longScope])
    expect(cursor.length).toBeGreaterThan(512)
    await expectInvalidCursor(cursor, longScope)
  })
})
