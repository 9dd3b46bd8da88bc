import { createExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it, vi } from 'vitest'
import type { Env as WorkerEnv } from '../src/config'
import worker from '../src/index'
import {
  BASE_URL,
  api,
  apiWithEnv,
  decodeJwt,
  expectProblem,
  fetchWorker,
  login,
  mintToken,
  outboxMessagesTo,
  registerAndLogin,
  registerUser,
  uniqueName,
} from './helpers'
import type { RegisteredUser, TokenPair } from './helpers'

// HTTP-level attack corpus (STYLE.md rule 8: a named `Security:` suite). Every request goes through
// the worker's fetch, so the middleware order in src/index.ts is under test as much as each check.

const FORM = 'application/x-www-form-urlencoded'
const OTHER_SECRET = 'another-service-secret-of-at-least-32-bytes'
const textEncoder = new TextEncoder()

function base64Url(input: string | Uint8Array): string {
  const bytes = typeof input === 'string' ? textEncoder.encode(input) : input
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/**
 * Signs arbitrary header and payload segments with HMAC, bypassing jose's own checks, so tokens
 * jose would refuse to mint (unknown `crit`, a payload that is not JSON) can still be forged.
 */
async function signRaw(
  header: Record<string, unknown> | string,
  payload: Record<string, unknown> | string,
  { alg = 'HS256', secret = env.JWT_SECRET }: { alg?: 'HS256' | 'HS384' | 'HS512'; secret?: string } = {},
): Promise<string> {
  const encode = (part: Record<string, unknown> | string) =>
    base64Url(typeof part === 'string' ? part : JSON.stringify(part))
  const signingInput = `${encode(header)}.${encode(payload)}`
  const key = await crypto.subtle.importKey(
    'raw',
    textEncoder.encode(secret),
    { name: 'HMAC', hash: `SHA-${alg.slice(2)}` },
    false,
    ['sign'],
  )
  const signature = new Uint8Array(await crypto.subtle.sign('HMAC', key, textEncoder.encode(signingInput)))
  return `${signingInput}.${base64Url(signature)}`
}

/** The claims of a valid access token for `sub`, as another service holding the key would mint them. */
function accessClaims(sub: string): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000)
  return {
    sub,
    jti: crypto.randomUUID(),
    sid: crypto.randomUUID(),
    token_type: 'access',
    iat: now,
    nbf: now,
    exp: now + 300,
  }
}

function me(authorization: string | undefined, headers: Record<string, string> = {}): Promise<Response> {
  return fetchWorker(`${BASE_URL}/api/v1/users/me`, {
    headers: authorization === undefined ? headers : { ...headers, authorization },
  })
}

function registration(username: string, email = `${username}@example.com`): Record<string, string> {
  return { username, email, password: 'correct horse battery staple' }
}

function formBody(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString()
}

/** A body that arrives as a stream, so the request carries no Content-Length. */
function streamedBody(content: string): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(textEncoder.encode(content))
      controller.close()
    },
  })
}

interface Victim {
  user: RegisteredUser
  tokens: TokenPair
}

interface ForgedCase {
  name: string
  forge: (victim: Victim) => Promise<string> | string
  code: 'token_invalid' | 'token_expired'
}

const [HEADER, PAYLOAD, SIGNATURE] = [0, 1, 2] as const

function segments(token: string): [string, string, string] {
  const parts = token.split('.')
  return [parts[HEADER] ?? '', parts[PAYLOAD] ?? '', parts[SIGNATURE] ?? '']
}

const forgedTokens: ForgedCase[] = [
  {
    name: 'alg none, no signature',
    forge: ({ user }) => {
      const header = base64Url(JSON.stringify({ alg: 'none', typ: 'JWT' }))
      return `${header}.${base64Url(JSON.stringify(accessClaims(String(user.id))))}.`
    },
    code: 'token_invalid',
  },
  {
    name: 'HS384 with the real secret',
    forge: ({ user }) => signRaw({ alg: 'HS384', typ: 'JWT' }, accessClaims(String(user.id)), { alg: 'HS384' }),
    code: 'token_invalid',
  },
  {
    name: 'HS512 with the real secret',
    forge: ({ user }) => signRaw({ alg: 'HS512', typ: 'JWT' }, accessClaims(String(user.id)), { alg: 'HS512' }),
    code: 'token_invalid',
  },
  {
    name: 'tampered payload (sub changed, original signature)',
    forge: async ({ tokens }) => {
      const other = await registerUser()
      const [header, , signature] = segments(tokens.access_token)
      const payload = { ...decodeJwt(tokens.access_token).payload, sub: String(other.id) }
      return `${header}.${base64Url(JSON.stringify(payload))}.${signature}`
    },
    code: 'token_invalid',
  },
  {
    name: 'stripped signature',
    forge: ({ tokens }) => {
      const [header, payload] = segments(tokens.access_token)
      return `${header}.${payload}.`
    },
    code: 'token_invalid',
  },
  {
    name: "foreign signature (another token's)",
    forge: async ({ tokens }) => {
      const other = await registerAndLogin()
      const [header, payload] = segments(tokens.access_token)
      return `${header}.${payload}.${segments(other.tokens.access_token)[SIGNATURE]}`
    },
    code: 'token_invalid',
  },
  {
    name: 'signed with a wrong secret',
    forge: ({ user }) => mintToken({ sub: String(user.id) }, {}, OTHER_SECRET),
    code: 'token_invalid',
  },
  {
    name: 'missing typ',
    forge: ({ user }) => mintToken({ sub: String(user.id) }, { typ: undefined }),
    code: 'token_invalid',
  },
  {
    name: "typ 'at+jwt'",
    forge: ({ user }) => mintToken({ sub: String(user.id) }, { typ: 'at+jwt' }),
    code: 'token_invalid',
  },
  {
    name: 'unknown crit header',
    forge: ({ user }) =>
      signRaw(
        { alg: 'HS256', typ: 'JWT', crit: ['x-edgepress-unknown'], 'x-edgepress-unknown': true },
        accessClaims(String(user.id)),
      ),
    code: 'token_invalid',
  },
  ...(['sub', 'jti', 'sid', 'iat', 'exp', 'token_type'] as const).map(
    (claim): ForgedCase => ({
      name: `missing ${claim}`,
      forge: ({ user }) => mintToken({ sub: String(user.id), [claim]: undefined }),
      code: 'token_invalid',
    }),
  ),
  {
    name: 'sub as a number instead of a string',
    forge: ({ user }) => mintToken({ sub: user.id }),
    code: 'token_invalid',
  },
  {
    name: 'empty sub',
    forge: () => mintToken({ sub: '' }),
    code: 'token_invalid',
  },
  {
    name: 'exp as a string',
    forge: ({ user }) => mintToken({ sub: String(user.id), exp: String(Math.floor(Date.now() / 1000) + 300) }),
    code: 'token_invalid',
  },
  {
    name: 'iat an hour in the future',
    forge: ({ user }) => mintToken({ sub: String(user.id), iat: Math.floor(Date.now() / 1000) + 3600 }),
    code: 'token_invalid',
  },
  {
    name: "token_type 'ACCESS' (case matters)",
    forge: ({ user }) => mintToken({ sub: String(user.id), token_type: 'ACCESS' }),
    code: 'token_invalid',
  },
  {
    name: "token_type 'refresh' (a real refresh token from login)",
    forge: ({ tokens }) => tokens.refresh_token,
    code: 'token_invalid',
  },
  {
    name: 'expired (exp in the past)',
    forge: ({ user }) => {
      const now = Math.floor(Date.now() / 1000)
      return mintToken({ sub: String(user.id), iat: now - 900, nbf: now - 900, exp: now - 600 })
    },
    code: 'token_expired',
  },
  {
    name: 'nbf an hour in the future',
    forge: ({ user }) => mintToken({ sub: String(user.id), nbf: Math.floor(Date.now() / 1000) + 3600 }),
    code: 'token_invalid',
  },
  {
    name: 'malformed base64',
    forge: ({ tokens }) => {
      const [, payload, signature] = segments(tokens.access_token)
      return `eyJ!!!*~.${payload}.${signature}`
    },
    code: 'token_invalid',
  },
  {
    name: 'malformed JSON payload segment (validly signed)',
    forge: () => signRaw({ alg: 'HS256', typ: 'JWT' }, '{"sub":"1","token_type":'),
    code: 'token_invalid',
  },
  {
    name: 'malformed JSON header segment',
    forge: ({ tokens }) => {
      const [, payload, signature] = segments(tokens.access_token)
      return `${base64Url('{"alg":"HS256",')}.${payload}.${signature}`
    },
    code: 'token_invalid',
  },
  {
    name: '2 segments',
    forge: ({ tokens }) => segments(tokens.access_token).slice(0, 2).join('.'),
    code: 'token_invalid',
  },
  {
    name: '4 segments',
    forge: ({ tokens }) => `${tokens.access_token}.${segments(tokens.access_token)[SIGNATURE]}`,
    code: 'token_invalid',
  },
  {
    name: 'a validly signed 10 KB token',
    forge: ({ user }) => mintToken({ sub: String(user.id), padding: 'p'.repeat(10 * 1024) }),
    code: 'token_invalid',
  },
  {
    name: 'just dots',
    forge: () => '..',
    code: 'token_invalid',
  },
]

describe('Security: forged access tokens on GET /users/me', () => {
  it.each(forgedTokens)('refuses $name', async ({ forge, code }) => {
    const victim = await registerAndLogin()
    const token = await forge(victim)

    const res = await me(`Bearer ${token}`)

    expect(res.status).toBeLessThan(500)
    await expectProblem(res, 401, code)
    const challenge = res.headers.get('www-authenticate') ?? ''
    expect(challenge.startsWith('Bearer realm="api"')).toBe(true)
    expect(challenge).toContain('error="invalid_token"')
  })

  it('the real access token of the same login is accepted (the corpus above is not failing for another reason)', async () => {
    const { user, tokens } = await registerAndLogin()
    const res = await me(`Bearer ${tokens.access_token}`)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, username: user.username })
  })
})

describe('Security: tokens minted by another service holding the key (docs/API.md point 2)', () => {
  it('accepts a valid token for an existing user', async () => {
    const user = await registerUser()
    const token = await mintToken({ sub: String(user.id) })

    const res = await me(`Bearer ${token}`)

    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, username: user.username, email: user.email })
  })

  it.each([
    ['a user id that was never issued', '987654321'],
    ['a non-numeric subject', 'not-a-user'],
  ])('refuses a valid token whose sub is %s with 401', async (_label, sub) => {
    const token = await mintToken({ sub })

    const res = await me(`Bearer ${token}`)

    await expectProblem(res, 401, 'token_invalid')
    expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"')
  })
})

describe('Security: Authorization schemes', () => {
  it.each(['Bearer', 'bearer', 'JWT', 'jwt', 'BEARER'])('accepts the %s scheme', async (scheme) => {
    const { user, tokens } = await registerAndLogin()

    const res = await me(`${scheme} ${tokens.access_token}`)

    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id })
  })

  it.each([
    ['Basic credentials', 'Basic dXNlcjpwYXNzd29yZA=='],
    ['an unknown scheme', 'Token x'],
    ['an empty header', ''],
    ['Bearer with no token', 'Bearer'],
    ['Bearer with only spaces after it', 'Bearer    '],
    ['no Authorization header', undefined],
  ])('answers %s with 401 not_authenticated and a bare challenge', async (_label, authorization) => {
    const res = await me(authorization)

    await expectProblem(res, 401, 'not_authenticated')
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
  })

  it('does not accept a real access token under the Basic scheme', async () => {
    const { tokens } = await registerAndLogin()
    const res = await me(`Basic ${tokens.access_token}`)
    await expectProblem(res, 401, 'not_authenticated')
  })
})

describe('Security: malformed request bodies are 4xx, never 5xx', () => {
  it('answers malformed JSON on /auth/register with 400 validation_failed', async () => {
    const res = await api('POST', '/auth/register', '{"username": "x", "email":')
    await expectProblem(res, 400, 'validation_failed')
  })

  it.each([
    ['a JSON array', '[{"username":"a","email":"a@example.com","password":"correct horse"}]'],
    ['a JSON string', '"alice"'],
    ['JSON null', 'null'],
    ['a JSON number', '42'],
    ['an empty body', ''],
  ])('answers %s on /auth/register with 400', async (_label, body) => {
    const res = await api('POST', '/auth/register', body, undefined, { 'content-type': 'application/json' })
    await expectProblem(res, 400, 'validation_failed')
  })

  it('answers a body over 64 KiB with a Content-Length with 413 payload_too_large', async () => {
    const body = JSON.stringify({ username: uniqueName(), email: 'big@example.com', password: 'x'.repeat(70 * 1024) })
    const res = await api('POST', '/auth/register', body)
    await expectProblem(res, 413, 'payload_too_large')
  })

  // Straight into the worker's fetch: a stream-bodied Request has no Content-Length, so the limit
  // must be enforced while reading, not by trusting a header.
  async function postStreamed(path: string, content: string): Promise<Response> {
    const request = new Request(`${BASE_URL}/api/v1${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: streamedBody(content),
    })
    expect(request.headers.has('content-length')).toBe(false)
    return worker.fetch(request, env, createExecutionContext())
  }

  it('answers a streamed body over 64 KiB (no Content-Length) with 413 payload_too_large', async () => {
    const res = await postStreamed('/auth/register', 'x'.repeat(64 * 1024 + 1))
    await expectProblem(res, 413, 'payload_too_large')
  })

  it('accepts a streamed body under the limit (the 413 above is about size, not streaming)', async () => {
    const username = uniqueName()
    const body = JSON.stringify(registration(username))
    const res = await postStreamed('/auth/register', body)
    expect(res.status).toBe(201)
  })

  it('answers a text/plain body with 415 unsupported_media_type', async () => {
    const res = await api('POST', '/auth/register', 'username=alice', undefined, { 'content-type': 'text/plain' })
    await expectProblem(res, 415, 'unsupported_media_type')
  })

  it('answers a form body to POST /auth/logout-all with 415', async () => {
    const { tokens } = await registerAndLogin()
    const res = await api('POST', '/auth/logout-all', 'a=b', tokens.access_token, { 'content-type': FORM })
    await expectProblem(res, 415, 'unsupported_media_type')
    // The refused request did not log anyone out.
    expect((await me(`Bearer ${tokens.access_token}`)).status).toBe(200)
  })

  it('answers a form body to POST /auth/logout with 415', async () => {
    const { tokens } = await registerAndLogin()
    const body = formBody({ refresh_token: tokens.refresh_token })
    const res = await api('POST', '/auth/logout', body, tokens.access_token, { 'content-type': FORM })
    await expectProblem(res, 415, 'unsupported_media_type')
    expect((await me(`Bearer ${tokens.access_token}`)).status).toBe(200)
  })

  it('accepts a form body on /auth/register', async () => {
    const username = uniqueName()
    const email = `${username}@example.com`
    const body = formBody(registration(username, email))

    const res = await api('POST', '/auth/register', body, undefined, { 'content-type': FORM })

    expect(res.status).toBe(201)
    expect(await res.json()).toMatchObject({ username, email })
  })

  it('accepts a form body on /auth/token', async () => {
    const user = await registerUser()
    const body = formBody({ username: user.username, password: user.password })

    const res = await api('POST', '/auth/token', body, undefined, { 'content-type': FORM })

    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ token_type: 'Bearer' })
  })

  it('accepts a form body on /auth/token/refresh', async () => {
    const { tokens } = await registerAndLogin()
    const body = formBody({ refresh_token: tokens.refresh_token })

    const res = await api('POST', '/auth/token/refresh', body, undefined, { 'content-type': FORM })

    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ token_type: 'Bearer' })
  })

  it('accepts a form body on /auth/token/verify', async () => {
    const { user, tokens } = await registerAndLogin()
    const body = formBody({ token: tokens.access_token })

    const res = await api('POST', '/auth/token/verify', body, undefined, { 'content-type': FORM })

    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ token_type: 'access', sub: String(user.id) })
  })

  it.each([
    ['/auth/register', { username: 'someone', email: 'someone@example.com' }, ['password']],
    ['/auth/register', { email: 'someone@example.com', password: 'correct horse' }, ['username']],
    ['/auth/register', { username: 'someone', password: 'correct horse' }, ['email']],
    ['/auth/register', {}, ['username', 'email', 'password']],
    ['/auth/token', { username: 'someone' }, ['password']],
    ['/auth/token', { password: 'correct horse' }, ['username']],
    ['/auth/token/refresh', {}, ['refresh_token']],
    ['/auth/token/verify', {}, ['token']],
  ])('POST %s with %j names %j in errors[].path', async (path, body, fields) => {
    const res = await api('POST', path, body)

    const problem = await expectProblem(res, 400, 'validation_failed')
    const paths = (problem.errors ?? []).map((error) => error.path)
    for (const field of fields) expect(paths).toContain(field)
  })

  it.each(['/api/v1/nope', '/api/v1/users/me/extra', '/api/v2/users/me', '/api/v1/auth/token/../../admin'])(
    'answers the unknown route %s with 404 not_found',
    async (path) => {
      const res = await api('GET', path)
      await expectProblem(res, 404, 'not_found')
    },
  )

  it('answers 404, not 415, to a foreign body on an unknown route', async () => {
    const res = await api('POST', '/api/v1/nope', 'hello', undefined, { 'content-type': 'text/plain' })
    await expectProblem(res, 404, 'not_found')
  })

  it('answers 405, not 415, to a form body sent with the wrong method', async () => {
    const res = await api('PUT', '/users/me', 'a=1', undefined, { 'content-type': 'application/x-www-form-urlencoded' })
    await expectProblem(res, 405, 'method_not_allowed')
  })

  // PUT is not in the contract for /users/me (GET, PATCH and DELETE are).
  it.each([
    ['PUT', '/users/me', 'GET'],
    ['GET', '/auth/token', 'POST'],
    ['DELETE', '/auth/register', 'POST'],
  ])('answers %s %s with 405 method_not_allowed and an Allow header', async (method, path, allowed) => {
    const res = await api(method, path)

    await expectProblem(res, 405, 'method_not_allowed')
    const allow = (res.headers.get('allow') ?? '').split(',').map((name) => name.trim())
    expect(allow).toContain(allowed)
    expect(allow).not.toContain(method)
  })
})

describe('Security: X-Request-Id', () => {
  const SANE_GENERATED = /^[\w-]{8,255}$/

  async function requests(headers: Record<string, string>): Promise<Array<[string, Response]>> {
    const { tokens } = await registerAndLogin()
    const username = uniqueName()
    const json = { ...headers, 'content-type': 'application/json' }
    return [
      ['200 GET /users/me', await api('GET', '/users/me', undefined, tokens.access_token, headers)],
      ['201 register', await api('POST', '/auth/register', registration(username), undefined, json)],
      ['400 malformed JSON', await api('POST', '/auth/register', '{', undefined, json)],
      ['401 no token', await api('GET', '/users/me', undefined, undefined, headers)],
      ['401 forged token', await api('GET', '/users/me', undefined, 'not.a.token', headers)],
      ['404 unknown route', await api('GET', '/nope', undefined, undefined, headers)],
      ['405 wrong method', await api('GET', '/auth/token', undefined, undefined, headers)],
      ['413 large body', await api('POST', '/auth/register', 'x'.repeat(65 * 1024 + 1), undefined, json)],
      [
        '415 text/plain',
        await api('POST', '/auth/register', 'x', undefined, { ...headers, 'content-type': 'text/plain' }),
      ],
    ]
  }

  it('is on every response, success and error', async () => {
    const responses = await requests({})
    for (const [label, res] of responses) {
      expect(res.headers.get('x-request-id'), label).toMatch(SANE_GENERATED)
    }
    expect(responses.map(([, res]) => res.status)).toEqual([200, 201, 400, 401, 401, 404, 405, 413, 415])
  })

  it('is echoed when the client sends a sane one, also in the problem body', async () => {
    for (const [label, res] of await requests({ 'x-request-id': 'abc-123' })) {
      expect(res.headers.get('x-request-id'), label).toBe('abc-123')
      if (res.status >= 400)
        expect((await res.json()) as { request_id?: string }, label).toMatchObject({ request_id: 'abc-123' })
    }
  })

  it.each([
    ['contains spaces', 'abc 123'],
    ['is 300 characters long', 'a'.repeat(300)],
    ['contains header-injection characters', 'abc\tdef'],
    ['contains quotes and angle brackets', '<script>"x"</script>'],
  ])('is regenerated when the one sent %s', async (_label, sent) => {
    for (const [label, res] of await requests({ 'x-request-id': sent })) {
      const id = res.headers.get('x-request-id')
      expect(id, label).not.toBe(sent)
      expect(id, label).toMatch(SANE_GENERATED)
    }
  })
})

describe('Security: no secret in any response', () => {
  const FORBIDDEN = ['password', 'hash', 'pbkdf2', env.JWT_SECRET]

  function expectNoSecrets(text: string, password: string): void {
    for (const word of [...FORBIDDEN, password]) expect(text.toLowerCase()).not.toContain(word.toLowerCase())
  }

  it('register, login and /users/me bodies carry no password, hash or key', async () => {
    const username = uniqueName()
    const password = 'Sup3r-secret-passphrase'
    const registered = await api('POST', '/auth/register', { username, email: `${username}@example.com`, password })
    expect(registered.status).toBe(201)
    expectNoSecrets(await registered.text(), password)

    const loggedIn = await api('POST', '/auth/token', { username, password })
    expect(loggedIn.status).toBe(200)
    const loginText = await loggedIn.text()
    expectNoSecrets(loginText, password)
    const pair = JSON.parse(loginText) as TokenPair
    for (const token of [pair.access_token, pair.refresh_token]) {
      expectNoSecrets(JSON.stringify(decodeJwt(token)), password)
    }

    const profile = await api('GET', '/users/me', undefined, pair.access_token)
    expect(profile.status).toBe(200)
    expectNoSecrets(await profile.text(), password)
  })

  it('a validation failure does not echo the password that was sent', async () => {
    const password = 'echo-me-if-you-dare'
    const res = await api('POST', '/auth/register', { username: 'has space', email: 'not-an-email', password })
    const problem = await expectProblem(res, 400, 'validation_failed')
    expect(JSON.stringify(problem)).not.toContain(password)
  })

  // A D1 binding whose every call fails with a message that quotes SQL, a hash and the secret, as
  // driver errors can: the 500 must be the opaque internal_error, whatever the cause said.
  const LEAKY_MESSAGE = `D1_ERROR: SQLITE_ERROR near "select": select "id", "password_hash" from "users" where pbkdf2$ ${env.JWT_SECRET}`
  const fail = (): never => {
    throw new Error(LEAKY_MESSAGE)
  }
  const failingDb = { prepare: fail, batch: fail, exec: fail, dump: fail, withSession: fail } as unknown as D1Database

  function expectOpaque500(text: string): void {
    expect(text).not.toMatch(/^\s*at /m)
    expect(text).not.toMatch(/\bat .+:\d+:\d+/)
    for (const leak of ['select', 'insert', 'SQLITE', 'D1_ERROR', 'password_hash', 'pbkdf2', env.JWT_SECRET]) {
      expect(text.toLowerCase()).not.toContain(leak.toLowerCase())
    }
  }

  it('a 500 from a failing database on register carries no stack, SQL or secret', async () => {
    const username = uniqueName()
    const request = new Request(`${BASE_URL}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(registration(username)),
    })

    const res = await worker.fetch(request, { ...env, DB: failingDb }, createExecutionContext())

    const text = await res.clone().text()
    await expectProblem(res, 500, 'internal_error')
    expectOpaque500(text)
    expectOpaque500(JSON.stringify([...res.headers]))
  })

  it('a 500 from a failing database on /users/me carries no stack, SQL or secret', async () => {
    const user = await registerUser()
    const token = await mintToken({ sub: String(user.id) })
    const request = new Request(`${BASE_URL}/api/v1/users/me`, { headers: { authorization: `Bearer ${token}` } })

    const res = await worker.fetch(request, { ...env, DB: failingDb }, createExecutionContext())

    const text = await res.clone().text()
    await expectProblem(res, 500, 'internal_error')
    expectOpaque500(text)
  })
})

describe('Security: configuration (docs/API.md point 11)', () => {
  it.each([
    ['missing', undefined],
    ['10 bytes long', 'tenbytes!!'],
    ['empty', ''],
  ])('a JWT_SECRET that is %s gives a 500 naming the variable, never its value', async (_label, secret) => {
    const request = new Request(`${BASE_URL}/api/v1/users/me`, { headers: { 'x-request-id': 'cfg-1' } })

    const res = await worker.fetch(request, { ...env, JWT_SECRET: secret }, createExecutionContext())

    const text = await res.clone().text()
    const problem = await expectProblem(res, 500, 'internal_error')
    expect(problem.detail).toContain('JWT_SECRET')
    if (secret !== undefined && secret !== '') expect(text).not.toContain(secret)
    expect(text).not.toContain(env.JWT_SECRET)
    expect(text).not.toMatch(/^\s*at /m)
    expect(res.headers.get('x-request-id')).toBe('cfg-1')
  })

  it('the same request with the configured secret is served (the 500 above is the secret, not the harness)', async () => {
    const user = await registerUser()
    const token = await mintToken({ sub: String(user.id) })
    const request = new Request(`${BASE_URL}/api/v1/users/me`, { headers: { authorization: `Bearer ${token}` } })

    const res = await worker.fetch(request, { ...env }, createExecutionContext())

    expect(res.status).toBe(200)
  })
})

/** Server-Timing with its measured durations left out: which bindings were called, how often, in how many waves. */
function withoutDurations(serverTiming: string): string {
  return serverTiming.replace(/;dur=[0-9.]+/g, '')
}

describe('Security: no enumeration through Server-Timing on the no-enumeration endpoints', () => {
  const timingOf = (res: Response): string => withoutDurations(res.headers.get('server-timing') ?? '')

  it('POST /auth/password/reset makes the same calls and waves for an address with an account and one without', async () => {
    const user = await registerUser()
    const known = await api('POST', '/auth/password/reset', { email: user.email })
    const unknown = await api('POST', '/auth/password/reset', { email: `${uniqueName('ghost')}@example.com` })
    expect([known.status, unknown.status]).toEqual([202, 202])
    expect(timingOf(unknown)).toBe(timingOf(known))
  })

  it('POST /subscribers makes the same calls and waves for a new, a pending and an active address', async () => {
    const fresh = `${uniqueName('fresh')}@example.com`
    const pending = `${uniqueName('pending')}@example.com`
    expect((await api('POST', '/subscribers', { email: pending })).status).toBe(202)
    const active = `${uniqueName('active')}@example.com`
    expect((await api('POST', '/subscribers', { email: active })).status).toBe(202)
    await env.DB.prepare("UPDATE subscribers SET status = 'active' WHERE email = ?").bind(active).run()

    const answers = [
      await api('POST', '/subscribers', { email: fresh }),
      await api('POST', '/subscribers', { email: pending }),
      await api('POST', '/subscribers', { email: active }),
    ]
    expect(answers.map((res) => res.status)).toEqual([202, 202, 202])
    expect(new Set(answers.map(timingOf)).size).toBe(1)
  })
})

describe('Security: account enumeration on POST /auth/token', () => {
  function withoutRequestId(body: Record<string, unknown>): Record<string, unknown> {
    const { request_id: _ignored, ...rest } = body
    return rest
  }

  // X-D1-Bookmark carries the database's position at the time, and Server-Timing's durations are
  // measured: both differ from request to request whatever the account. Server-Timing's calls and
  // round trips must not (they would tell how far the request got), so only its durations go.
  const VARYING_HEADERS = new Set(['x-request-id', 'x-d1-bookmark'])
  function headersWithoutRequestId(res: Response): Array<[string, string]> {
    return [...res.headers]
      .filter(([name]) => !VARYING_HEADERS.has(name))
      .map(([name, value]): [string, string] => [name, name === 'server-timing' ? withoutDurations(value) : value])
      .sort(([a], [b]) => a.localeCompare(b))
  }

  async function expectIndistinguishable(unknown: Response, wrongPassword: Response): Promise<void> {
    expect(wrongPassword.status).toBe(unknown.status)
    const [a, b] = [
      (await unknown.json()) as Record<string, unknown>,
      (await wrongPassword.json()) as Record<string, unknown>,
    ]
    expect(withoutRequestId(b)).toEqual(withoutRequestId(a))
    expect(headersWithoutRequestId(wrongPassword)).toEqual(headersWithoutRequestId(unknown))
    expect(unknown.headers.has('x-request-id')).toBe(wrongPassword.headers.has('x-request-id'))
  }

  it('answers an unknown username and a wrong password identically', async () => {
    const user = await registerUser()

    const unknown = await api('POST', '/auth/token', { username: uniqueName('nobody'), password: user.password })
    const wrongPassword = await api('POST', '/auth/token', { username: user.username, password: 'wrong password!' })

    expect(unknown.status).toBe(401)
    await expectIndistinguishable(unknown.clone(), wrongPassword.clone())
    await expectProblem(unknown, 401, 'invalid_credentials')
  })

  it('answers an unknown email and a wrong password by differently cased email identically', async () => {
    const user = await registerUser()

    const unknown = await api('POST', '/auth/token', {
      username: `${uniqueName('nobody')}@example.com`,
      password: user.password,
    })
    const wrongPassword = await api('POST', '/auth/token', {
      username: user.email.toUpperCase(),
      password: 'wrong password!',
    })

    expect(unknown.status).toBe(401)
    await expectIndistinguishable(unknown.clone(), wrongPassword.clone())
    await expectProblem(wrongPassword, 401, 'invalid_credentials')
  })

  it('logs in by email ignoring case (docs/API.md point 5)', async () => {
    const username = uniqueName('alice')
    const user = await registerUser({ username, email: `${username}@example.com` })

    const tokens = await login({ username: user.email.toUpperCase(), password: user.password })

    expect(decodeJwt(tokens.access_token).payload.sub).toBe(String(user.id))
  })
})

describe('Security: concurrent registrations', () => {
  const ATTEMPTS = 10

  it('of one username: exactly one 201, the rest 409 username_taken', async () => {
    const username = uniqueName('race')
    const responses = await Promise.all(
      Array.from({ length: ATTEMPTS }, (_, i) =>
        api('POST', '/auth/register', registration(username, `${username}.${i}@example.com`)),
      ),
    )

    const created = responses.filter((res) => res.status === 201)
    expect(created).toHaveLength(1)
    for (const res of responses.filter((res) => res.status !== 201)) await expectProblem(res, 409, 'username_taken')
  })

  it('of one email in different cases: exactly one 201, the rest 409 email_taken', async () => {
    const local = uniqueName('race')
    const responses = await Promise.all(
      Array.from({ length: ATTEMPTS }, (_, i) => {
        const email = i % 2 === 0 ? `${local}@example.com` : `${local.toUpperCase()}@EXAMPLE.COM`
        return api('POST', '/auth/register', registration(`${local}_${i}`, email))
      }),
    )

    const created = responses.filter((res) => res.status === 201)
    expect(created).toHaveLength(1)
    for (const res of responses.filter((res) => res.status !== 201)) await expectProblem(res, 409, 'email_taken')
  })
})

describe('Content types', () => {
  it('answers JSON as application/json; charset=utf-8 and errors as application/problem+json', async () => {
    const ok = await api('GET', '/health')
    expect(ok.headers.get('content-type')).toBe('application/json; charset=utf-8')
    const missing = await api('GET', '/posts/999999999')
    expect(missing.headers.get('content-type')).toBe('application/problem+json')
  })
})

describe('Security: responses that carry tokens or a private view are never stored', () => {
  it('token, login, refresh and password change answer Cache-Control: no-store (RFC 6749 §5.1)', async () => {
    const user = await registerUser()
    const credentials = { username: user.username, password: user.password }
    const token = await api('POST', '/auth/token', credentials)
    const loggedIn = await api('POST', '/auth/login', credentials)
    const pair = (await token.json()) as TokenPair
    const refreshed = await api('POST', '/auth/token/refresh', { refresh_token: pair.refresh_token })
    const current = (await refreshed.clone().json()) as TokenPair
    const changed = await api(
      'POST',
      '/auth/password/change',
      { old_password: user.password, new_password: 'another long password' },
      current.access_token,
    )
    for (const [label, res] of [
      ['token', token],
      ['login', loggedIn],
      ['refresh', refreshed],
      ['password change', changed],
    ] as const) {
      expect(res.status, label).toBe(200)
      expect(res.headers.get('cache-control'), label).toBe('no-store')
    }
  })

  it('register and /users/me answer with no-store', async () => {
    const username = uniqueName()
    const registered = await api('POST', '/auth/register', {
      username,
      email: `${username}@example.com`,
      password: 'correct horse battery staple',
    })
    expect(registered.status).toBe(201)
    expect(registered.headers.get('cache-control')).toMatch(/\bno-store\b/)
    const tokens = await login({ username, password: 'correct horse battery staple' })
    expect((await api('GET', '/users/me', undefined, tokens.access_token)).headers.get('cache-control')).toMatch(
      /\bno-store\b/,
    )
  })
})

describe('Security: a session has an absolute lifetime (SESSION_MAX_AGE, 30 days by default)', () => {
  async function ageSession(refreshToken: string, days: number): Promise<void> {
    const sid = decodeJwt(refreshToken).payload.sid as string
    await env.DB.prepare('UPDATE sessions SET created_at = ? WHERE sid = ?')
      .bind(Date.now() - days * 86_400_000, sid)
      .run()
  }

  it('refuses to refresh a session older than 30 days, however recently it rotated', async () => {
    const { tokens } = await registerAndLogin()
    const rotated = await api('POST', '/auth/token/refresh', { refresh_token: tokens.refresh_token })
    expect(rotated.status).toBe(200)
    const current = (await rotated.json()) as TokenPair
    await ageSession(current.refresh_token, 31)
    await expectProblem(
      await api('POST', '/auth/token/refresh', { refresh_token: current.refresh_token }),
      401,
      'token_expired',
    )
    expect((await api('POST', '/auth/token/verify', { token: current.refresh_token })).status).toBe(401)
  })

  it('still refreshes a session a day short of the limit', async () => {
    const { tokens } = await registerAndLogin()
    await ageSession(tokens.refresh_token, 29)
    expect((await api('POST', '/auth/token/refresh', { refresh_token: tokens.refresh_token })).status).toBe(200)
  })

  it('follows SESSION_MAX_AGE', async () => {
    const oneHour: WorkerEnv = { ...env, SESSION_MAX_AGE: '3600' }
    const user = await registerUser()
    const pair = (await (
      await apiWithEnv(oneHour, 'POST', '/auth/token', { username: user.username, password: user.password })
    ).json()) as TokenPair
    const sid = decodeJwt(pair.refresh_token).payload.sid as string
    await env.DB.prepare('UPDATE sessions SET created_at = ? WHERE sid = ?')
      .bind(Date.now() - 3_601_000, sid)
      .run()
    await expectProblem(
      await apiWithEnv(oneHour, 'POST', '/auth/token/refresh', { refresh_token: pair.refresh_token }),
      401,
      'token_expired',
    )
  })
})

describe('Security: a worker without an email provider never logs mail', () => {
  // A deploy that skipped the email step: the default console transport with the https:// address
  // a deployed worker has.
  const noMail: WorkerEnv = { ...env, MAIL_TRANSPORT: undefined, PUBLIC_BASE_URL: 'https://app.example.com' }

  it('refuses to register (500 naming MAIL_TRANSPORT), writes nothing and prints nothing', async () => {
    const log = vi.spyOn(console, 'log')
    try {
      const username = uniqueName('nomail')
      const res = await apiWithEnv(noMail, 'POST', '/auth/register', {
        username,
        email: `${username}@example.com`,
        password: 'correct horse battery staple',
      })
      const problem = await expectProblem(res, 500, 'internal_error')
      expect(problem.detail).toContain('MAIL_TRANSPORT')
      expect(await env.DB.prepare('SELECT count(*) AS n FROM users WHERE username = ?').bind(username).first('n')).toBe(
        0,
      )
      expect(log.mock.calls.flat().join('\n')).not.toContain('--- email ---')
    } finally {
      log.mockRestore()
    }
  })

  it('refuses a password reset for a real account the same way, and queues no link', async () => {
    const user = await registerUser()
    const res = await apiWithEnv(noMail, 'POST', '/auth/password/reset', { email: user.email })
    const problem = await expectProblem(res, 500, 'internal_error')
    expect(problem.detail).toContain('MAIL_TRANSPORT')
    expect(
      await env.DB.prepare(
        "SELECT count(*) AS n FROM one_time_tokens WHERE lower(email) = lower(?) AND purpose = 'password_reset'",
      )
        .bind(user.email)
        .first('n'),
    ).toBe(0)

    // The same answer for an address without an account: no enumeration through the 500.
    const unknown = await apiWithEnv(noMail, 'POST', '/auth/password/reset', {
      email: `${uniqueName('nobody')}@example.com`,
    })
    expect((await expectProblem(unknown, 500, 'internal_error')).detail).toBe(problem.detail)
  })

  it('keeps console mail working on a local run whose PUBLIC_BASE_URL is a plain-http test host', async () => {
    const testHost: WorkerEnv = { ...env, MAIL_TRANSPORT: undefined, PUBLIC_BASE_URL: 'http://edgepress.test.lan:8787' }
    const username = uniqueName('lan')
    const res = await apiWithEnv(testHost, 'POST', '/auth/register', {
      username,
      email: `${username}@example.com`,
      password: 'correct horse battery staple',
    })
    expect(res.status).toBe(201)
    expect((await outboxMessagesTo(`${username}@example.com`))[0]?.text).toContain(
      'http://edgepress.test.lan:8787/verify-email?token=',
    )
  })
})
