import { hc } from 'hono/client'
import { describe, expect, it } from 'vitest'
import type { AppType } from './index'
import { BASE_URL, fetchWorker, registerAdmin, uniqueName } from '../test/helpers'

// The README's typed-client example, run for real: every path, body and response below is
// type-checked against the app's own route definitions (`npm test` runs tsc on this file).
const client = hc<AppType>(BASE_URL, {
  fetch: (input: RequestInfo | URL, init?: RequestInit) => fetchWorker(input, init),
})

describe('typed client (hono/client)', () => {
  it('drives the auth flow and a post through its whole life', async () => {
    const username = uniqueName('typed')
    const password = 'correct horse battery staple'

    const registered = await client.api.v1.auth.register.$post({
      json: { username, email: `${username}@example.com`, password },
    })
    expect(registered.status).toBe(201)
    if (registered.status !== 201) return
    const user = await registered.json()
    expect(user.username).toBe(username)

    const login = await client.api.v1.auth.token.$post({ query: {}, json: { username, password } })
    expect(login.status).toBe(200)
    if (login.status !== 200) return
    const tokens = await login.json()
    // Without ?mode=cookie the answer is the JSON token pair.
    if (!('access_token' in tokens)) throw new Error('expected a token pair')
    const auth = { headers: { authorization: `Bearer ${tokens.access_token}` } }

    const me = await client.api.v1.users.me.$get({}, auth)
    expect(me.status).toBe(200)
    if (me.status === 200) expect((await me.json()).id).toBe(user.id)

    const created = await client.api.v1.posts.$post({ json: { title: 'Typed', body: 'end to end' } }, auth)
    expect(created.status).toBe(201)
    if (created.status !== 201) return
    const post = await created.json()
    expect(post.author.username).toBe(username)

    const read = await client.api.v1.posts[':id'].$get({ param: { id: String(post.id) } })
    expect(read.status).toBe(200)
    if (read.status === 200) expect((await read.json()).title).toBe('Typed')

    const patched = await client.api.v1.posts[':id'].$patch(
      { param: { id: String(post.id) }, json: { title: 'Typed, again' } },
      auth,
    )
    expect(patched.status).toBe(200)
    if (patched.status === 200) expect((await patched.json()).title).toBe('Typed, again')

    const listed = await client.api.v1.posts.$get({ query: { author: String(user.id), limit: '10' } })
    expect(listed.status).toBe(200)
    if (listed.status === 200) expect((await listed.json()).results.map((p) => p.id)).toEqual([post.id])

    const removed = await client.api.v1.posts[':id'].$delete({ param: { id: String(post.id) } }, auth)
    expect(removed.status).toBe(204)

    const refreshed = await client.api.v1.auth.token.refresh.$post({
      query: {},
      json: { refresh_token: tokens.refresh_token },
    })
    expect(refreshed.status).toBe(200)

    const loggedOut = await client.api.v1.auth.logout.$post({ json: {} }, auth)
    expect(loggedOut.status).toBe(204)
    const after = await client.api.v1.users.me.$get({}, auth)
    expect(after.status).toBe(401)
  })

  it('reaches the newsletter routes: a dry run of a post, then no send to read yet', async () => {
    const { tokens } = await registerAdmin()
    const auth = { headers: { authorization: `Bearer ${tokens.access_token}` } }
    const created = await client.api.v1.posts.$post({ json: { title: 'Typed issue', body: 'to the list' } }, auth)
    expect(created.status).toBe(201)
    if (created.status !== 201) return
    const post = await created.json()

    const dryRun = await client.api.v1.posts[':id'].newsletter.$post(
      { param: { id: String(post.id) }, query: { dry_run: 'true' } },
      auth,
    )
    expect(dryRun.status).toBe(200)
    if (dryRun.status !== 200) return
    const view = await dryRun.json()
    expect(view.status).toBe('dry_run')
    expect(typeof view.recipients).toBe('number')

    const none = await client.api.v1.posts[':id'].newsletter.$get({ param: { id: String(post.id) } }, auth)
    expect(none.status).toBe(404)
  })
})
