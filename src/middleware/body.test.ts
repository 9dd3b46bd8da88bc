import { Hono } from 'hono'
import type { Context } from 'hono'
import { describe, expect, it } from 'vitest'
import { onError } from '../errors'
import type { AppEnv } from '../router'
import { FORM_MEDIA_TYPE, negotiateBody } from './body'
import { routePolicy } from './route-policy'
import { BASE_URL, expectProblem } from '../../test/helpers'

// Request-body negotiation (src/middleware/body.ts) on a tiny app: one route that takes JSON only,
// one that declares `formBody`, each echoing what its handler received.

interface Received {
  contentType: string | null
  text: string
}

const app = new Hono<AppEnv>()
app.use(negotiateBody())
const echo = async (c: Context) =>
  c.json({ contentType: c.req.header('content-type') ?? null, text: await c.req.text() } satisfies Received)
app.post('/json', echo)
app.post('/form', routePolicy({ formBody: true }), echo)
app.post('/multipart', routePolicy({ formBody: true, multipartBody: true }), echo)
app.get('/read', (c) => c.text('read'))
app.onError(onError)

function post(path: string, contentType: string | undefined, body: BodyInit | null): Promise<Response> {
  const headers: Record<string, string> = contentType === undefined ? {} : { 'content-type': contentType }
  return Promise.resolve(app.request(`${BASE_URL}${path}`, { method: 'POST', headers, body }))
}

async function received(res: Response): Promise<Received> {
  expect(res.status, await res.clone().text()).toBe(200)
  return (await res.json()) as Received
}

describe('JSON bodies', () => {
  it('passes JSON through untouched, on every route, whatever its parameters', async () => {
    const body = '{"title":"héllo","n":1}'
    for (const type of ['application/json', 'application/json; charset=utf-8', 'Application/JSON']) {
      for (const path of ['/json', '/form']) {
        expect(await received(await post(path, type, body)), `${path} ${type}`).toEqual({
          contentType: type,
          text: body,
        })
      }
    }
  })

  it('accepts structured +json types (merge-patch, vendor types)', async () => {
    for (const type of ['application/merge-patch+json', 'application/vnd.api+json', 'application/problem+json']) {
      expect((await received(await post('/json', type, '{}'))).text, type).toBe('{}')
    }
  })

  it('drops the Content-Length of the body it replaces', async () => {
    const probe = new Hono()
    probe.use(negotiateBody())
    probe.post('/json', (c) => c.json({ length: c.req.header('content-length') ?? null }))
    const res = await probe.request(`${BASE_URL}/json`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': '3' },
      body: '   ',
    })
    expect(await res.json()).not.toEqual({ length: '3' })
  })

  it('turns an empty or blank JSON body into {}', async () => {
    for (const body of ['', '   ', '\n\t']) {
      const got = await received(await post('/json', 'application/json', body))
      expect(got, JSON.stringify(body)).toEqual({ contentType: 'application/json', text: '{}' })
    }
  })

  it('leaves malformed JSON for the route to refuse', async () => {
    expect((await received(await post('/json', 'application/json', '{"title":'))).text).toBe('{"title":')
  })
})

describe('form bodies', () => {
  it('turns a form body into the same JSON object where the route declares formBody', async () => {
    const got = await received(
      await post('/form', FORM_MEDIA_TYPE, 'username=ada&password=two+words%26more&name=%C3%A9'),
    )
    expect(got.contentType).toBe('application/json')
    expect(JSON.parse(got.text)).toEqual({ username: 'ada', password: 'two words&more', name: 'é' })
  })

  it('accepts the form type with parameters and in any letter case', async () => {
    for (const type of [`${FORM_MEDIA_TYPE}; charset=UTF-8`, 'Application/X-WWW-Form-Urlencoded']) {
      expect(JSON.parse((await received(await post('/form', type, 'a=1'))).text), type).toEqual({ a: '1' })
    }
  })

  it('keeps the last value of a repeated field, and makes an empty form {}', async () => {
    expect(JSON.parse((await received(await post('/form', FORM_MEDIA_TYPE, 'a=1&a=2'))).text)).toEqual({ a: '2' })
    expect(JSON.parse((await received(await post('/form', FORM_MEDIA_TYPE, ''))).text)).toEqual({})
  })

  it('refuses a form body where the route does not declare it: 415, naming JSON only', async () => {
    const problem = await expectProblem(await post('/json', FORM_MEDIA_TYPE, 'a=1'), 415, 'unsupported_media_type')
    expect(problem.detail).toBe('Send the body as application/json.')
  })
})

describe('multipart bodies', () => {
  it('turns the text fields of a multipart body into JSON where the route declares multipartBody', async () => {
    const form = new FormData()
    form.set('List-Unsubscribe', 'One-Click')
    form.set('file', new Blob(['bytes']), 'a.txt')
    const got = await received(await post('/multipart', undefined, form))
    expect(got.contentType).toBe('application/json')
    expect(JSON.parse(got.text)).toEqual({ 'List-Unsubscribe': 'One-Click' })
  })

  it('answers a malformed multipart body 400 validation_failed, never 500', async () => {
    const problem = await expectProblem(
      await post('/multipart', 'multipart/form-data; boundary=xyz', '--xyz\r\nContent-Disposition: form-da'),
      400,
      'validation_failed',
    )
    expect(problem.errors).toEqual([{ path: '', message: 'is not valid multipart/form-data' }])
  })
})

describe('other media types', () => {
  it('are refused with 415; the detail names the form type only where the route accepts it', async () => {
    for (const type of ['text/plain', 'multipart/form-data; boundary=x', 'application/xml', 'application/json-seq']) {
      const jsonOnly = await expectProblem(await post('/json', type, 'x'), 415, 'unsupported_media_type')
      expect(jsonOnly.detail, type).toBe('Send the body as application/json.')
      const formToo = await expectProblem(await post('/form', type, 'x'), 415, 'unsupported_media_type')
      expect(formToo.detail, type).toBe('Send the body as application/json or application/x-www-form-urlencoded.')
    }
  })
})

describe('what it does not look at', () => {
  it('a body sent without Content-Type passes as it is', async () => {
    // Bytes, not a string: a string body would get text/plain from the Request constructor.
    const res = await post('/json', undefined, new TextEncoder().encode('raw text'))
    expect(await received(res)).toEqual({ contentType: null, text: 'raw text' })
  })

  it('a Content-Type without a body passes', async () => {
    expect(await received(await post('/json', 'text/plain', null))).toEqual({ contentType: 'text/plain', text: '' })
  })

  it('unmatched routes and wrong methods answer 404 whatever the body is, not 415', async () => {
    expect((await post('/nowhere', 'text/plain', 'x')).status).toBe(404)
    expect((await post('/read', 'text/plain', 'x')).status).toBe(404)
  })
})
