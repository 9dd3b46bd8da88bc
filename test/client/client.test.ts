import { env } from 'cloudflare:workers'
import { Secret, TOTP } from 'otpauth'
import { describe, expect, it } from 'vitest'
import { createClient, memoryStorage } from '../../client/src/index'
import type { ClientOptions, SessionChange } from '../../client/src/index'
import { BASE_URL, api, decodeJwt, fetchWorker, mintToken, registerAndLogin, registerUser } from '../helpers'
import type { RegisteredUser } from '../helpers'
import { SoftAuthenticator } from '../webauthn-authenticator'

// @edgepress/client against the real worker, in workerd: the worker's own fetch (test/helpers.ts
// fetchWorker: the Worker entry with the pool's D1, KV, queues and objects, in process) is the
// client's fetch.

interface Recorded {
  method: string
  path: string
  headers: Headers
}

/** The worker's fetch, recording every request; `intercept` may answer one instead (a fault). */
function workerFetch(
  options: {
    intercept?: (request: Request) => Response | undefined | Promise<Response | undefined>
    workerEnv?: typeof env
  } = {},
) {
  const sent: Recorded[] = []
  const fetch = async (request: Request): Promise<Response> => {
    const url = new URL(request.url)
    sent.push({ method: request.method, path: url.pathname + url.search, headers: new Headers(request.headers) })
    const faked = await options.intercept?.(request)
    if (faked !== undefined) return faked
    return fetchWorker(request, undefined, options.workerEnv)
  }
  return { fetch, sent, count: (path: string) => sent.filter((r) => r.path.startsWith(path)).length }
}

/** An intercept that lets requests to `path` reach the worker but holds their answer until release(). */
function answerHeldBack(path: string) {
  let release: () => void = () => undefined
  const held = new Promise<void>((resolve) => {
    release = resolve
  })
  const intercept = async (request: Request): Promise<Response | undefined> => {
    if (!request.url.includes(path)) return undefined
    const answer = await fetchWorker(request)
    await held
    return answer
  }
  return { intercept, release: () => release() }
}

function clientFor(user: Pick<RegisteredUser, 'username' | 'password'>, options: Partial<ClientOptions> = {}) {
  const changes: SessionChange[] = []
  const client = createClient({
    baseUrl: BASE_URL,
    onSessionChange: (change) => changes.push(change),
    sleep: async () => undefined,
    ...options,
  })
  return { client, changes, signIn: () => client.signIn({ username: user.username, password: user.password }) }
}

describe('@edgepress/client: sessions', () => {
  it('signs in, reads the user, and keeps the pair in its storage', async () => {
    const user = await registerUser()
    const storage = memoryStorage()
    const { fetch } = workerFetch()
    const { client, changes, signIn } = clientFor(user, { fetch, storage })
    expect((await signIn()).data).toEqual({ status: 'signed_in' })
    const me = await client.GET('/api/v1/users/me')
    expect(me.data?.username).toBe(user.username)
    expect(changes.map((c) => c.event)).toEqual(['signed_in'])
    const stored = JSON.parse(String(await storage.get('edgepress.session')))
    expect(stored.refreshToken).toEqual(expect.any(String))
  })

  it('answers a wrong password with the problem and its code', async () => {
    const user = await registerUser()
    const { fetch } = workerFetch()
    const { client } = clientFor(user, { fetch })
    const result = await client.signIn({ username: user.username, password: 'not the password at all' })
    expect(result.error).toMatchObject({ status: 401, code: 'invalid_credentials' })
  })

  it('20 concurrent calls with an expired access token cause exactly one refresh, and all succeed', async () => {
    const user = await registerUser()
    const storage = memoryStorage()
    const { fetch, count } = workerFetch()
    const { client, changes, signIn } = clientFor(user, { fetch, storage })
    await signIn()
    // The server thinks the access token expired; the client's clock does not know yet.
    const session = (await client.session())!
    const claims = decodeJwt(session.accessToken!).payload
    const iat = Number(claims.iat)
    const expired = await mintToken({ ...claims, iat: iat - 600, nbf: iat - 600, exp: iat - 300 })
    await storage.set('edgepress.session', JSON.stringify({ ...session, accessToken: expired }))
    const again = createClient({ baseUrl: BASE_URL, fetch, storage, onSessionChange: (c) => changes.push(c) })
    const results = await Promise.all(Array.from({ length: 20 }, () => again.GET('/api/v1/users/me')))
    expect(results.map((r) => r.response?.status)).toEqual(Array(20).fill(200))
    expect(count('/api/v1/auth/token/refresh')).toBe(1)
    expect(changes.map((c) => c.event)).toEqual(['signed_in', 'refreshed'])
  })

  it('refreshes before a request when the access token has a minute or less left, once for many calls', async () => {
    const user = await registerUser()
    let clock = Date.now()
    const { fetch, count } = workerFetch()
    const { client, signIn } = clientFor(user, { fetch, now: () => clock })
    await signIn()
    clock += 250_000 // 300 s tokens: 50 s left
    const results = await Promise.all(Array.from({ length: 5 }, () => client.GET('/api/v1/users/me')))
    expect(results.every((r) => r.response?.status === 200)).toBe(true)
    expect(count('/api/v1/auth/token/refresh')).toBe(1)
  })

  it('a second client over the same storage (another tab) uses the pair the first refreshed', async () => {
    const user = await registerUser()
    const storage = memoryStorage()
    let clock = Date.now()
    const { fetch, count } = workerFetch()
    const first = clientFor(user, { fetch, storage, now: () => clock })
    await first.signIn()
    const second = createClient({ baseUrl: BASE_URL, fetch, storage, now: () => clock })
    expect((await second.GET('/api/v1/users/me')).response?.status).toBe(200)
    clock += 290_000
    expect((await first.client.GET('/api/v1/users/me')).response?.status).toBe(200)
    expect((await second.GET('/api/v1/users/me')).response?.status).toBe(200)
    expect(count('/api/v1/auth/token/refresh')).toBe(1)
  })

  it('a refresh that completes after signOut() writes nothing back', async () => {
    const user = await registerUser()
    const storage = memoryStorage()
    // The refresh's answer is on its way while the app signs out.
    const { intercept, release } = answerHeldBack('/auth/token/refresh')
    let clock = Date.now()
    const { fetch, count } = workerFetch({ intercept })
    const { client, changes, signIn } = clientFor(user, { fetch, storage, now: () => clock })
    await signIn()
    clock += 290_000
    const read = client.GET('/api/v1/users/me')
    await new Promise((resolve) => setTimeout(resolve, 0))
    const signOut = client.signOut()
    release()
    await Promise.all([read, signOut])
    expect(await storage.get('edgepress.session')).toBeNull()
    expect(await client.session()).toBeNull()
    expect(changes.map((c) => c.event)).not.toContain('refreshed')
    expect(changes.at(-1)?.event).toBe('signed_out')
    // One refresh only (a second of the same token would look like theft), and the server ended
    // the session: its refresh token is refused.
    expect(count('/api/v1/auth/token/refresh')).toBe(1)
    expect(count('/api/v1/auth/logout')).toBe(1)
  })

  it('a call made while sign-out is on its way neither sends the session nor brings it back', async () => {
    const user = await registerUser()
    const storage = memoryStorage()
    const { intercept, release } = answerHeldBack('/auth/logout')
    const { fetch, sent } = workerFetch({ intercept })
    const { client, changes, signIn } = clientFor(user, { fetch, storage })
    await signIn()
    const signOut = client.signOut()
    await new Promise((resolve) => setTimeout(resolve, 0))
    const during = await client.GET('/api/v1/users/me')
    release()
    await signOut
    expect(during.error?.status).toBe(401)
    expect(sent.find((r) => r.path === '/api/v1/users/me')?.headers.has('authorization')).toBe(false)
    expect(await client.session()).toBeNull()
    expect(await storage.get('edgepress.session')).toBeNull()
    expect(changes.map((c) => c.event)).toEqual(['signed_in', 'signed_out'])
  })

  it('ends the local session when a request answers token_revoked (signed out everywhere from elsewhere)', async () => {
    const user = await registerUser()
    const { fetch } = workerFetch()
    const { client, changes, signIn } = clientFor(user, { fetch })
    await signIn()
    const other = await registerAndLoginAs(user)
    expect((await api('POST', '/auth/logout-all', undefined, other)).status).toBe(204)
    const after = await client.GET('/api/v1/users/me')
    expect(after.error?.code).toBe('token_revoked')
    expect(await client.session()).toBeNull()
    expect(changes.at(-1)).toMatchObject({ event: 'session_ended', reason: 'token_revoked' })
  })

  it('retries a sign-out the API answered 503, so the session ends on the server too', async () => {
    const user = await registerUser()
    let outages = 1
    const { fetch, count } = workerFetch({
      intercept: (request) => {
        if (!request.url.includes('/auth/logout') || outages === 0) return undefined
        outages -= 1
        return new Response(
          JSON.stringify({ type: 'about:blank', title: 'x', status: 503, code: 'service_unavailable' }),
          {
            status: 503,
            headers: { 'content-type': 'application/problem+json', 'retry-after': '1' },
          },
        )
      },
    })
    const { client, signIn } = clientFor(user, { fetch })
    await signIn()
    const refreshToken = (await client.session())?.refreshToken
    await client.signOut()
    expect(count('/api/v1/auth/logout')).toBe(2)
    const refused = await api('POST', '/auth/token/refresh', { refresh_token: refreshToken })
    expect(refused.status).toBe(401)
  })

  it('ends the local session when its refresh token turns out reused, and says so', async () => {
    const user = await registerUser()
    const workerEnv = { ...env, REFRESH_REUSE_GRACE: '0' }
    const storage = memoryStorage()
    const { fetch } = workerFetch({ workerEnv })
    let clock = Date.now()
    const { client, changes, signIn } = clientFor(user, { fetch, storage, now: () => clock })
    await signIn()
    // Another copy of the app (a restored backup) spends the same refresh token first.
    const stolen = JSON.parse(String(await storage.get('edgepress.session'))) as { refreshToken: string }
    const spent = await fetchWorker(
      `${BASE_URL}/api/v1/auth/token/refresh`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: stolen.refreshToken }),
      },
      workerEnv,
    )
    expect(spent.status).toBe(200)
    clock += 290_000
    const result = await client.GET('/api/v1/users/me')
    expect(result.error?.status).toBe(401)
    expect(await client.session()).toBeNull()
    expect(changes.at(-1)).toMatchObject({ event: 'session_ended', reason: 'token_reused' })
  })

  it('signOutEverywhere() ends every session of the user', async () => {
    const user = await registerUser()
    const other = await registerAndLoginAs(user)
    const { fetch } = workerFetch()
    const { client, signIn } = clientFor(user, { fetch })
    await signIn()
    await client.signOutEverywhere()
    const elsewhere = await api('GET', '/users/me', undefined, other)
    expect(elsewhere.status).toBe(401)
  })

  it('walks the mfa_required step with verifyMfa()', async () => {
    const { user, tokens } = await registerAndLogin()
    const started = await api('POST', '/auth/mfa/totp', undefined, tokens.access_token)
    const { secret } = (await started.json()) as { secret: string }
    const code = (offset = 0) =>
      new TOTP({ secret: Secret.fromBase32(secret), algorithm: 'SHA1', digits: 6, period: 30 }).generate({
        timestamp: Date.now() + offset * 30_000,
      })
    expect((await api('POST', '/auth/mfa/totp/confirm', { code: code(-1) }, tokens.access_token)).status).toBe(200)
    const { fetch } = workerFetch()
    const { client, changes, signIn } = clientFor(user, { fetch })
    expect((await signIn()).data).toEqual({ status: 'mfa_required' })
    expect(await client.session()).toBeNull()
    expect((await client.verifyMfa({ code: '000000' === code() ? '111111' : '000000' })).error?.code).toBe(
      'invalid_credentials',
    )
    expect((await client.verifyMfa({ code: code() })).data).toEqual({ status: 'signed_in' })
    expect((await client.GET('/api/v1/users/me')).data?.mfa_enabled).toBe(true)
    expect(changes.map((c) => c.event)).toEqual(['signed_in'])
  })
})

describe('@edgepress/client: requests', () => {
  it('sends the newest X-D1-Bookmark it has seen, so a read follows the app’s own write', async () => {
    const user = await registerUser()
    const { fetch, sent } = workerFetch()
    const { client, signIn } = clientFor(user, { fetch })
    await signIn()
    const created = await client.POST('/api/v1/posts', { body: { title: 'Read your writes', body: 'at once' } })
    expect(created.response?.status).toBe(201)
    const written = created.response?.headers.get('x-d1-bookmark')
    expect(written).toEqual(expect.any(String))
    const read = await client.GET('/api/v1/posts/{id}', { params: { path: { id: String(created.data!.id) } } })
    expect(read.data?.title).toBe('Read your writes')
    const carried = sent.at(-1)?.headers.get('x-d1-bookmark') ?? ''
    expect(carried >= (written ?? '~')).toBe(true)
    expect(client.bookmark()).toEqual(expect.any(String))
  })

  it('retries a GET answered 503 after its Retry-After, and never repeats a POST', async () => {
    const user = await registerUser()
    const waits: number[] = []
    let outages = 0
    const { fetch, count } = workerFetch({
      intercept: (request) => {
        if (request.url.includes('/auth/token')) return undefined
        if (outages >= 1) return undefined
        outages += 1
        return new Response(
          JSON.stringify({ type: 'about:blank', title: 'Unavailable', status: 503, code: 'service_unavailable' }),
          {
            status: 503,
            headers: { 'content-type': 'application/problem+json', 'retry-after': '2' },
          },
        )
      },
    })
    const { client, signIn } = clientFor(user, {
      fetch,
      random: () => 0,
      sleep: async (ms) => {
        waits.push(ms)
      },
    })
    await signIn()
    const read = await client.GET('/api/v1/users/me')
    expect(read.response?.status).toBe(200)
    expect(count('/api/v1/users/me')).toBe(2)
    expect(waits).toEqual([2000])

    outages = 0
    const write = await client.POST('/api/v1/posts', { body: { title: 'Once', body: 'only' } })
    expect(write.error).toMatchObject({ status: 503, code: 'service_unavailable' })
    expect(count('/api/v1/posts')).toBe(1)
  })

  it('retries network errors of a GET with capped, jittered backoff, then gives up', async () => {
    const waits: number[] = []
    const { fetch, count } = workerFetch({
      intercept: () => {
        throw new TypeError('network connection lost')
      },
    })
    const client = createClient({
      baseUrl: BASE_URL,
      fetch,
      retry: { retries: 3, baseDelayMs: 100, maxDelayMs: 250 },
      random: () => 0.99,
      sleep: async (ms) => {
        waits.push(ms)
      },
    })
    await expect(client.GET('/api/v1/health')).rejects.toThrow(/network connection lost/)
    expect(count('/api/v1/health')).toBe(4)
    expect(waits).toEqual([99, 198, 250])
  })

  it('types the calls from the OpenAPI document: path parameters, query, body and answer', async () => {
    const user = await registerUser()
    const { fetch } = workerFetch()
    const { client, signIn } = clientFor(user, { fetch })
    await signIn()
    const list = await client.GET('/api/v1/posts', { params: { query: { limit: 5 } } })
    expect(Array.isArray(list.data?.results)).toBe(true)
    const missing = await client.GET('/api/v1/posts/{id}', { params: { path: { id: '999999999' } } })
    expect(missing.error).toMatchObject({ status: 404, code: 'not_found' })
  })
})

/** A second session of the same user, its access token. */
async function registerAndLoginAs(user: RegisteredUser): Promise<string> {
  const response = await api('POST', '/auth/token', { username: user.username, password: user.password })
  return ((await response.json()) as { access_token: string }).access_token
}

describe('@edgepress/client: passkeys', () => {
  it('registers a passkey for the signed-in user, then signs in with it usernameless and by username', async () => {
    const user = await registerUser()
    const { client, signIn } = clientFor(user, { fetch: workerFetch().fetch })
    expect((await signIn()).data).toEqual({ status: 'signed_in' })
    const authenticator = await SoftAuthenticator.create()
    const added = await client.registerPasskey({
      name: 'SDK key',
      createCredential: (options) => authenticator.register(options),
    })
    expect(added.error).toBeUndefined()
    expect(added.data).toMatchObject({ name: 'SDK key', last_used_at: null })

    const asked: { allowCredentials: { id: string }[] }[] = []
    const fresh = createClient({ baseUrl: BASE_URL, fetch: workerFetch().fetch, sleep: async () => undefined })
    const getCredential = (
      options: Parameters<typeof authenticator.assert>[0] & { allowCredentials: { id: string }[] },
    ) => {
      asked.push(options)
      return authenticator.assert(options)
    }
    expect((await fresh.signInWithPasskey({ getCredential })).data).toEqual({ status: 'signed_in' })
    const me = await fresh.GET('/api/v1/users/me')
    expect(me.data).toMatchObject({ id: user.id, passkeys: 1 })
    await fresh.signOut()
    expect((await fresh.signInWithPasskey({ username: user.username, getCredential })).data).toEqual({
      status: 'signed_in',
    })
    expect(asked.map((options) => options.allowCredentials.map((entry) => entry.id))).toEqual([
      [],
      [authenticator.credentialId],
    ])
  })

  it('gives back the refusal of a passkey that does not verify, and keeps no session', async () => {
    const { tokens } = await registerAndLogin()
    const authenticator = await SoftAuthenticator.create()
    const started = await api('POST', '/auth/passkeys/register/options', undefined, tokens.access_token)
    const { challenge_id, options } = (await started.json()) as {
      challenge_id: string
      options: { challenge: string; user: { id: string } }
    }
    const created = await api(
      'POST',
      '/auth/passkeys/register',
      { challenge_id, response: await authenticator.register(options) },
      tokens.access_token,
    )
    expect(created.status).toBe(201)

    const client = createClient({ baseUrl: BASE_URL, fetch: workerFetch().fetch, sleep: async () => undefined })
    const otherKey = await authenticator.otherKey()
    const refused = await client.signInWithPasskey({
      getCredential: (asked) => authenticator.assert(asked, { signWith: otherKey }),
    })
    expect(refused.error).toMatchObject({ status: 401, code: 'invalid_credentials' })
    expect(await client.session()).toBeNull()
  })

  it('says what to pass where the browser ceremony is missing', async () => {
    const client = createClient({ baseUrl: BASE_URL, fetch: workerFetch().fetch, sleep: async () => undefined })
    await expect(client.signInWithPasskey()).rejects.toThrow(/getCredential/)
  })
})
