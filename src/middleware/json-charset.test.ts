import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import { onError } from '../errors'
import { ApiError } from '../lib/api-error'
import type { AppEnv } from '../router'
import { jsonCharset } from './json-charset'
import { BASE_URL, expectProblem } from '../../test/helpers'
import { PROVIDER_ORIGIN } from '../../test/oidc-provider'

// jsonCharset() (src/middleware/json-charset.ts) on a tiny app with one route per kind of response.

const app = new Hono<AppEnv>()
app.use(jsonCharset())
app.get('/json', (c) => c.json({ greeting: 'héllo' }, 201))
app.get('/response', () => new Response('{"built":"by hand"}', { headers: { 'content-type': 'application/json' } }))
app.get('/problem', () => {
  throw new ApiError(403, 'forbidden', 'No.')
})
app.get('/text', (c) => c.text('plain'))
app.get('/vendor', (c) => c.body('{}', 200, { 'content-type': 'application/vnd.api+json' }))
app.get('/stated', (c) => c.body('{}', 200, { 'content-type': 'application/json;charset=UTF-8' }))
app.get('/empty', (c) => c.body(null, 204))
// A response passed through as fetch() returned it: its headers are immutable. (The fake
// provider's hit counter answers application/json and counts nothing itself.)
app.get('/passed-through', () => fetch(`${PROVIDER_ORIGIN}/__control/hits?path=/json-charset`))
app.onError(onError)

async function get(path: string): Promise<Response> {
  return app.request(`${BASE_URL}${path}`)
}

describe('JSON responses', () => {
  it('state charset=utf-8, with status and body unchanged', async () => {
    const res = await get('/json')
    expect(res.status).toBe(201)
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8')
    expect(await res.json()).toEqual({ greeting: 'héllo' })
  })

  it('built by hand as bare application/json get it too', async () => {
    const res = await get('/response')
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8')
    expect(await res.text()).toBe('{"built":"by hand"}')
  })

  // Latent: no route passes a fetched JSON response through today (the edge cache rebuilds its
  // hits). The middleware sets the header on c.res in place, which throws on immutable headers
  // ("Can't modify immutable headers") and turns the answer into a 500; c.header() would copy the
  // response first. Remove `.fails` once the middleware copes.
  it('passed through from fetch() get it too, instead of failing with a 500', async () => {
    const res = await get('/passed-through')
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8')
  })
})

describe('everything else is left as it is', () => {
  it('problem+json', async () => {
    const res = await get('/problem')
    await expectProblem(res.clone(), 403, 'forbidden')
    expect(res.headers.get('content-type')).toBe('application/problem+json')
  })

  it('other media types, +json ones included', async () => {
    expect((await get('/text')).headers.get('content-type')).toBe('text/plain;charset=UTF-8')
    expect((await get('/vendor')).headers.get('content-type')).toBe('application/vnd.api+json')
  })

  it('a JSON type that already states its parameters', async () => {
    expect((await get('/stated')).headers.get('content-type')).toBe('application/json;charset=UTF-8')
  })

  it('a response without a body or a Content-Type', async () => {
    const res = await get('/empty')
    expect(res.status).toBe(204)
    expect(res.headers.get('content-type')).toBeNull()
  })
})
