import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import { toBase64Url, utf8 } from '../lib/encoding'
import { PUBLIC_REVALIDATE, isNotModified, matchesIfNoneMatch } from './conditional-get'
import { BASE_URL } from '../../test/helpers'

// Strong ETags and If-None-Match (src/http/conditional-get.ts): matchesIfNoneMatch() directly, and
// isNotModified() on a tiny app whose route answers one of a few fixed values, 304 when the
// client already holds it.

const VALUES: Record<string, unknown> = {
  one: { id: 1, title: 'one' },
  sameAsOne: { id: 1, title: 'one' },
  two: { id: 1, title: 'two' },
  oneReordered: { title: 'one', id: 1 },
  unicode: { title: 'héllo ✓' },
}

const app = new Hono()
app.get('/:name', async (c) => {
  const value = VALUES[c.req.param('name')]
  if (await isNotModified(c, value)) return c.body(null, 304)
  return c.json(value)
})

function get(name: string, ifNoneMatch?: string): Promise<Response> {
  const headers: Record<string, string> = ifNoneMatch === undefined ? {} : { 'if-none-match': ifNoneMatch }
  return Promise.resolve(app.request(`${BASE_URL}/${name}`, { headers }))
}

async function etagOf(name: string): Promise<string> {
  const res = await get(name)
  expect(res.status).toBe(200)
  await res.body?.cancel()
  return res.headers.get('etag')!
}

describe('the ETag isNotModified sets', () => {
  it('is strong and quoted, and the same for equal values', async () => {
    const etag = await etagOf('one')
    expect(etag).toMatch(/^"[A-Za-z0-9_-]{24}"$/)
    expect(await etagOf('one')).toBe(etag)
    expect(await etagOf('sameAsOne')).toBe(etag)
  })

  it('differs for a different value, and for the same fields in another order (another representation)', async () => {
    const etag = await etagOf('one')
    expect(await etagOf('two')).not.toBe(etag)
    expect(await etagOf('oneReordered')).not.toBe(etag)
  })

  it('is a digest of exactly the body c.json sends', async () => {
    for (const name of ['one', 'unicode']) {
      const res = await get(name)
      const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', utf8(await res.text())))
      expect(res.headers.get('etag'), name).toBe(`"${toBase64Url(digest.slice(0, 18))}"`)
    }
  })

  it('comes with public revalidation: caches may store, and must ask again', async () => {
    const etag = await etagOf('one')
    for (const res of [await get('one'), await get('one', etag)]) {
      expect(res.headers.get('cache-control')).toBe(PUBLIC_REVALIDATE)
      expect(res.headers.get('cache-control')).toBe('public, no-cache')
      await res.body?.cancel()
    }
  })
})

describe('isNotModified', () => {
  it('is true (304, no body, same ETag) when If-None-Match names the current ETag, weak or strong, alone or listed', async () => {
    const etag = await etagOf('one')
    for (const header of [etag, `W/${etag}`, '*', `"stale", ${etag}`, `"stale",${etag} , "older"`]) {
      const res = await get('one', header)
      expect(res.status, header).toBe(304)
      expect(res.headers.get('etag')).toBe(etag)
      expect(await res.text()).toBe('')
    }
  })

  it('is false (200 with the body) without If-None-Match or when it names only other tags', async () => {
    const stale = await etagOf('two')
    for (const header of [undefined, stale, `W/${stale}`, '"x", "y"', '']) {
      const res = await get('one', header)
      expect(res.status, String(header)).toBe(200)
      expect(await res.json()).toEqual(VALUES.one)
    }
  })
})

describe('matchesIfNoneMatch (RFC 9110 §13.1.2, weak comparison)', () => {
  const etag = '"abc"'

  it('matches the same opaque tag, W/ on either side', () => {
    expect(matchesIfNoneMatch('"abc"', etag)).toBe(true)
    expect(matchesIfNoneMatch('W/"abc"', etag)).toBe(true)
    expect(matchesIfNoneMatch('"abc"', 'W/"abc"')).toBe(true)
    expect(matchesIfNoneMatch('  "abc"  ', etag)).toBe(true)
  })

  it('matches * whatever the current tag, alone or in a list', () => {
    expect(matchesIfNoneMatch('*', etag)).toBe(true)
    expect(matchesIfNoneMatch(' * ', '"anything"')).toBe(true)
    expect(matchesIfNoneMatch('"x", *', etag)).toBe(true)
  })

  it('matches when any tag of a list is the current one', () => {
    expect(matchesIfNoneMatch('"x", "abc"', etag)).toBe(true)
    expect(matchesIfNoneMatch('"x",W/"abc","y"', etag)).toBe(true)
    expect(matchesIfNoneMatch('"x", "y"', etag)).toBe(false)
  })

  it('does not match a missing or empty header, an unquoted tag, another case, or a lower-case w/', () => {
    expect(matchesIfNoneMatch(undefined, etag)).toBe(false)
    expect(matchesIfNoneMatch('', etag)).toBe(false)
    expect(matchesIfNoneMatch('abc', etag)).toBe(false)
    expect(matchesIfNoneMatch('"ABC"', etag)).toBe(false)
    expect(matchesIfNoneMatch('w/"abc"', etag)).toBe(false)
    expect(matchesIfNoneMatch('"abc', etag)).toBe(false)
  })
})
