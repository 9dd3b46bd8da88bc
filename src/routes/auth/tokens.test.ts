import { env } from 'cloudflare:workers'
// jose's decoders read a token's header and claims without verifying it (test/helpers.ts
// decodeJwt also JSON-parses the signature segment, so it throws on real tokens).
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { describe, it } from 'vitest'
import { api, expectProblem, login, mintToken, registerAndLogin, registerUser, uniqueName } from '../../../test/helpers'
import type { TokenPair } from '../../../test/helpers'
import { getConfig } from '../../config'
import { hashPassword } from '../../lib/passwords'

const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
// The KV key of a revoked session; src/sessions/revocation-keys.ts owns the prefix.
const revokedSessionKey = (sid: string): string => `sid:${sid}`

interface PrivateUser {
  id: number
  username: string
  email: string
  email_verified: boolean
  is_admin: boolean
  created_at: string
  last_login_at: string | null
}

function form(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString()
}

function basic(username: string, password: string): Record<string, string> {
  return { authorization: `Basic ${btoa(`${username}:${password}`)}` }
}

function sidOf(token: string): string {
  return decodeJwt(token).sid as string
}

function jtiOf(token: string): string {
  return decodeJwt(token).jti!
}

function refresh(refreshToken: string): Promise<Response> {
  return api('POST', '/auth/token/refresh', { refresh_token: refreshToken })
}

function me(accessToken: string): Promise<Response> {
  return api('GET', '/users/me', undefined, accessToken)
}

async function sessionCount(userId: number): Promise<number> {
  const row = await env.DB.prepare('SELECT COUNT(*) AS n FROM sessions WHERE user_id = ?')
    .bind(userId)
    .first<{ n: number }>()
  return row!.n
}

/** Moves the session's last rotation a minute into the past: the reuse grace window is over. */
async function endGraceWindow(sid: string): Promise<void> {
  await env.DB.prepare('UPDATE sessions SET rotated_at = ? WHERE sid = ?')
    .bind(Date.now() - 60_000, sid)
    .run()
}

function expect204(res: Response): void {
  if (res.status !== 204) throw new Error(`expected 204, got ${res.status}`)
}

function withoutRequestId(problem: Record<string, unknown>): Record<string, unknown> {
  const { request_id: _requestId, ...rest } = problem
  return rest
}

describe.each(['/auth/token', '/auth/login'])('POST /api/v1%s', (path) => {
  async function expectTokenPair(res: Response): Promise<TokenPair> {
    const text = await res.text()
    if (res.status !== 200) throw new Error(`expected 200, got ${res.status}: ${text}`)
    const pair = JSON.parse(text) as TokenPair
    if (
      typeof pair.access_token !== 'string' ||
      typeof pair.refresh_token !== 'string' ||
      pair.token_type !== 'Bearer' ||
      pair.expires_in !== 300 ||
      pair.refresh_expires_in !== 86_400 ||
      Object.keys(pair).length !== 5
    ) {
      throw new Error(`not a token pair: ${text}`)
    }
    return pair
  }

  it('exchanges JSON credentials for a token pair that works', async ({ expect }) => {
    const user = await registerUser()
    const pair = await expectTokenPair(await api('POST', path, { username: user.username, password: user.password }))
    const res = await me(pair.access_token)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: user.id, username: user.username })
  })

  it('accepts a form-urlencoded body', async ({ expect }) => {
    const user = await registerUser()
    const res = await api('POST', path, form({ username: user.username, password: user.password }), undefined, FORM)
    const pair = await expectTokenPair(res)
    expect(decodeJwt(pair.access_token).sub).toBe(String(user.id))
  })

  it('accepts HTTP Basic with no body and no Content-Type', async ({ expect }) => {
    const user = await registerUser()
    const res = await api('POST', path, undefined, undefined, basic(user.username, user.password))
    const pair = await expectTokenPair(res)
    expect(decodeJwt(pair.access_token).sub).toBe(String(user.id))
  })

  it('answers 401 invalid_credentials to HTTP Basic with a wrong password', async () => {
    const user = await registerUser()
    await expectProblem(
      await api('POST', path, undefined, undefined, basic(user.username, 'wrong password!')),
      401,
      'invalid_credentials',
    )
  })

  it('logs in by email in any case', async ({ expect }) => {
    const username = uniqueName()
    const user = await registerUser({ username, email: `${username}.Mixed@Example.COM` })
    for (const email of [user.email, user.email.toLowerCase(), user.email.toUpperCase()]) {
      const pair = await expectTokenPair(await api('POST', path, { username: email, password: user.password }))
      expect(decodeJwt(pair.access_token).sub).toBe(String(user.id))
    }
  })

  it('answers wrong password and unknown user with the same 401 invalid_credentials', async ({ expect }) => {
    const user = await registerUser()
    const wrongPassword = await api('POST', path, { username: user.username, password: 'not the password' })
    const unknownUser = await api('POST', path, { username: uniqueName('ghost'), password: 'not the password' })
    const wrongHeader = wrongPassword.headers.get('www-authenticate')
    const unknownHeader = unknownUser.headers.get('www-authenticate')
    const wrongBody = await expectProblem(wrongPassword, 401, 'invalid_credentials')
    const unknownBody = await expectProblem(unknownUser, 401, 'invalid_credentials')
    expect(withoutRequestId(wrongBody)).toEqual(withoutRequestId(unknownBody))
    expect(wrongHeader).toBe(unknownHeader)
    expect(JSON.stringify(wrongBody)).not.toContain(user.username)
  })

  it('answers 400 naming password when it is missing', async ({ expect }) => {
    const user = await registerUser()
    const problem = await expectProblem(await api('POST', path, { username: user.username }), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('password')
    const formProblem = await expectProblem(
      await api('POST', path, form({ username: user.username }), undefined, FORM),
      400,
      'validation_failed',
    )
    expect(formProblem.errors?.map((e) => e.path)).toContain('password')
  })

  it('issues HS256 JWTs with the contract claims', async ({ expect }) => {
    const user = await registerUser()
    const before = Math.floor(Date.now() / 1000)
    const pair = await expectTokenPair(await api('POST', path, { username: user.username, password: user.password }))
    const after = Math.floor(Date.now() / 1000)
    const access = decodeJwt(pair.access_token)
    const refreshToken = decodeJwt(pair.refresh_token)
    for (const [token, type, ttl] of [
      [pair.access_token, 'access', 300],
      [pair.refresh_token, 'refresh', 86_400],
    ] as const) {
      const header = decodeProtectedHeader(token)
      expect(header).toMatchObject({ alg: 'HS256', typ: 'JWT', kid: expect.any(String) })
      expect(header.kid).not.toBe('')
      const payload = decodeJwt(token)
      expect(payload).toMatchObject({ sub: String(user.id), token_type: type })
      expect(payload.jti).toEqual(expect.any(String))
      expect(payload.sid).toEqual(expect.any(String))
      expect(payload.iat).toBeGreaterThanOrEqual(before)
      expect(payload.iat).toBeLessThanOrEqual(after)
      expect(payload.nbf).toEqual(expect.any(Number))
      expect(payload.nbf).toBeLessThanOrEqual(payload.iat!)
      expect(payload.exp).toBe(payload.iat! + ttl)
    }
    expect(access.sid).toBe(refreshToken.sid)
    expect(access.jti).not.toBe(refreshToken.jti)
  })

  it('starts a new session on every login', async ({ expect }) => {
    const user = await registerUser()
    const first = await expectTokenPair(await api('POST', path, { username: user.username, password: user.password }))
    const second = await expectTokenPair(await api('POST', path, { username: user.username, password: user.password }))
    expect(sidOf(first.access_token)).not.toBe(sidOf(second.access_token))
  })

  it('records last_login_at', async ({ expect }) => {
    const user = await registerUser()
    const before = Date.now()
    const pair = await expectTokenPair(await api('POST', path, { username: user.username, password: user.password }))
    const body = await (await me(pair.access_token)).json<PrivateUser>()
    expect(body.last_login_at).toMatch(ISO_UTC)
    expect(Date.parse(body.last_login_at!)).toBeGreaterThanOrEqual(before - 1000)
    expect(Date.parse(body.last_login_at!)).toBeLessThanOrEqual(Date.now() + 1000)
  })
})

describe('POST /api/v1/auth/token/refresh', () => {
  it('rotates: a new pair in the same session with a new refresh jti', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await refresh(tokens.refresh_token)
    expect(res.status).toBe(200)
    const pair = await res.json<TokenPair>()
    expect(pair).toMatchObject({ token_type: 'Bearer', expires_in: 300, refresh_expires_in: 86_400 })
    expect(sidOf(pair.refresh_token)).toBe(sidOf(tokens.refresh_token))
    expect(sidOf(pair.access_token)).toBe(sidOf(tokens.refresh_token))
    expect(jtiOf(pair.refresh_token)).not.toBe(jtiOf(tokens.refresh_token))
    expect(decodeJwt(pair.refresh_token)).toMatchObject({ sub: String(user.id), token_type: 'refresh' })
    expect((await me(pair.access_token)).status).toBe(200)
  })

  it('accepts a form-urlencoded body', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const res = await api('POST', '/auth/token/refresh', form({ refresh_token: tokens.refresh_token }), undefined, FORM)
    expect(res.status).toBe(200)
    expect(sidOf((await res.json<TokenPair>()).refresh_token)).toBe(sidOf(tokens.refresh_token))
  })

  it('within the grace window returns the current refresh token and a fresh access token', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const rotated = await (await refresh(tokens.refresh_token)).json<TokenPair>()
    const again = await refresh(tokens.refresh_token)
    expect(again.status).toBe(200)
    const replayed = await again.json<TokenPair>()
    expect(replayed.refresh_token).toBe(rotated.refresh_token)
    expect(jtiOf(replayed.access_token)).not.toBe(jtiOf(rotated.access_token))
    expect(sidOf(replayed.access_token)).toBe(sidOf(tokens.refresh_token))
    expect((await me(replayed.access_token)).status).toBe(200)
    // The grace answer did not end the session: the current refresh token still rotates.
    expect((await refresh(rotated.refresh_token)).status).toBe(200)
  })

  it('answers 401 token_reused outside the grace window and ends only that session', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const other = await login(user)
    const rotated = await (await refresh(tokens.refresh_token)).json<TokenPair>()
    await endGraceWindow(sidOf(tokens.refresh_token))

    const reused = await refresh(tokens.refresh_token)
    expect(reused.headers.get('www-authenticate')).toMatch(/^Bearer realm="api", error="invalid_token"/)
    await expectProblem(reused, 401, 'token_reused')

    await expectProblem(await refresh(rotated.refresh_token), 401, 'token_revoked')
    await expectProblem(await me(rotated.access_token), 401, 'token_revoked')
    await expectProblem(await me(tokens.access_token), 401, 'token_revoked')

    expect((await me(other.access_token)).status).toBe(200)
    expect((await refresh(other.refresh_token)).status).toBe(200)
  })

  it('answers 401 token_reused to a refresh token two generations old', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const second = await (await refresh(tokens.refresh_token)).json<TokenPair>()
    const third = await (await refresh(second.refresh_token)).json<TokenPair>()
    expect(jtiOf(third.refresh_token)).not.toBe(jtiOf(second.refresh_token))
    await expectProblem(await refresh(tokens.refresh_token), 401, 'token_reused')
    await expectProblem(await refresh(third.refresh_token), 401, 'token_revoked')
  })

  it('answers concurrent refreshes of one token alike, minting one successor', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const sessionsBefore = await sessionCount(user.id)
    const responses = await Promise.all(Array.from({ length: 5 }, () => refresh(tokens.refresh_token)))
    expect(responses.map((res) => res.status)).toEqual([200, 200, 200, 200, 200])
    const pairs = await Promise.all(responses.map((res) => res.json<TokenPair>()))
    expect(new Set(pairs.map((pair) => pair.refresh_token)).size).toBe(1)
    const successor = pairs[0]!.refresh_token
    expect(jtiOf(successor)).not.toBe(jtiOf(tokens.refresh_token))
    expect(sidOf(successor)).toBe(sidOf(tokens.refresh_token))
    expect(await sessionCount(user.id)).toBe(sessionsBefore)
    const row = await env.DB.prepare('SELECT current_jti FROM sessions WHERE sid = ?')
      .bind(sidOf(tokens.refresh_token))
      .first<{ current_jti: string }>()
    expect(row?.current_jti).toBe(jtiOf(successor))
    for (const pair of pairs) expect((await me(pair.access_token)).status).toBe(200)
  })

  it('answers 401 token_invalid to an access token', async () => {
    const { tokens } = await registerAndLogin()
    await expectProblem(await refresh(tokens.access_token), 401, 'token_invalid')
  })

  it('answers 401 token_invalid to garbage', async () => {
    await expectProblem(await refresh('not.a.jwt'), 401, 'token_invalid')
  })

  it('answers 400 naming refresh_token when it is missing', async ({ expect }) => {
    const problem = await expectProblem(await api('POST', '/auth/token/refresh', {}), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('refresh_token')
  })
})

describe('POST /api/v1/auth/token/verify', () => {
  const verify = (token: string): Promise<Response> => api('POST', '/auth/token/verify', { token })

  it('describes a valid access token', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await verify(tokens.access_token)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({
      token_type: 'access',
      sub: String(user.id),
      exp: decodeJwt(tokens.access_token).exp,
    })
  })

  it('describes a valid refresh token', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const res = await verify(tokens.refresh_token)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({
      token_type: 'refresh',
      sub: String(user.id),
      exp: decodeJwt(tokens.refresh_token).exp,
    })
  })

  it('accepts a form-urlencoded body', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const res = await api('POST', '/auth/token/verify', form({ token: tokens.access_token }), undefined, FORM)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ token_type: 'access' })
  })

  it('answers 401 token_expired to an expired token', async () => {
    const user = await registerUser()
    const now = Math.floor(Date.now() / 1000)
    const expired = await mintToken({ sub: String(user.id), iat: now - 1000, nbf: now - 1000, exp: now - 600 })
    await expectProblem(await verify(expired), 401, 'token_expired')
  })

  it('answers 401 token_revoked after logout', async () => {
    const { tokens } = await registerAndLogin()
    expect204(await api('POST', '/auth/logout', undefined, tokens.access_token))
    await expectProblem(await verify(tokens.access_token), 401, 'token_revoked')
    await expectProblem(await verify(tokens.refresh_token), 401, 'token_revoked')
  })

  it('answers 401 to a rotated refresh token', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const rotated = await (await refresh(tokens.refresh_token)).json<TokenPair>()
    const res = await verify(tokens.refresh_token)
    expect(res.status).toBe(401)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
    expect((await res.json<{ code: string }>()).code).toMatch(/^token_(revoked|invalid|reused)$/)
    expect((await verify(rotated.refresh_token)).status).toBe(200)
  })

  it('answers 401 token_invalid to garbage', async () => {
    await expectProblem(await verify('garbage'), 401, 'token_invalid')
  })

  it('answers 400 naming token when it is missing', async ({ expect }) => {
    const problem = await expectProblem(await api('POST', '/auth/token/verify', {}), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toContain('token')
  })
})

describe('POST /api/v1/auth/logout', () => {
  it('ends the session: its access and refresh tokens are refused at once', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const res = await api('POST', '/auth/logout', undefined, tokens.access_token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
    const refused = await me(tokens.access_token)
    expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer realm="api", error="invalid_token"/)
    await expectProblem(refused, 401, 'token_revoked')
    await expectProblem(await refresh(tokens.refresh_token), 401, 'token_revoked')
  })

  it("leaves the user's other sessions alone", async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const other = await login(user)
    expect204(await api('POST', '/auth/logout', undefined, tokens.access_token))
    expect((await me(other.access_token)).status).toBe(200)
    expect((await refresh(other.refresh_token)).status).toBe(200)
  })

  it("ends only its own session, even when another session's refresh token is in the body (docs/API.md point 7)", async ({
    expect,
  }) => {
    const { user, tokens } = await registerAndLogin()
    const second = await login(user)
    const res = await api('POST', '/auth/logout', { refresh_token: second.refresh_token }, tokens.access_token)
    expect(res.status).toBe(204)
    await expectProblem(await me(tokens.access_token), 401, 'token_revoked')
    await expectProblem(await refresh(tokens.refresh_token), 401, 'token_revoked')
    expect((await me(second.access_token)).status).toBe(200)
    expect((await refresh(second.refresh_token)).status).toBe(200)
  })

  it('accepts an empty JSON body (Content-Type set, no bytes)', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const res = await api('POST', '/auth/logout', '', tokens.access_token, { 'content-type': 'application/json' })
    expect(res.status).toBe(204)
  })

  it('answers 401 not_authenticated with a challenge when no token is sent', async ({ expect }) => {
    const res = await api('POST', '/auth/logout')
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
    await expectProblem(res, 401, 'not_authenticated')
  })

  it('keeps the session revoked in KV until its refresh token would have expired', async ({ expect }) => {
    const { tokens } = await registerAndLogin()
    const sid = sidOf(tokens.refresh_token)
    const refreshExp = decodeJwt(tokens.refresh_token).exp!
    expect204(await api('POST', '/auth/logout', undefined, tokens.access_token))

    const stored = await env.REVOKED_TOKENS.getWithMetadata(revokedSessionKey(sid))
    expect(stored.value).not.toBeNull()
    const { keys } = await env.REVOKED_TOKENS.list({ prefix: revokedSessionKey(sid) })
    expect(keys.map((key) => key.name)).toEqual([revokedSessionKey(sid)])
    expect(keys[0]!.expiration).toBeGreaterThanOrEqual(refreshExp)
    expect(keys[0]!.expiration).toBeLessThanOrEqual(refreshExp + 60)
  })
})

describe('POST /api/v1/auth/logout-all', () => {
  it('answers 204 to a body-less request and ends every session of the user', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const second = await login(user)
    const bystander = await registerAndLogin()

    const res = await api('POST', '/auth/logout-all', undefined, tokens.access_token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')

    for (const pair of [tokens, second]) {
      await expectProblem(await me(pair.access_token), 401, 'token_revoked')
      await expectProblem(await refresh(pair.refresh_token), 401, 'token_revoked')
    }
    expect((await me(bystander.tokens.access_token)).status).toBe(200)
    expect((await refresh(bystander.tokens.refresh_token)).status).toBe(200)
    // Logging in again starts a fresh, working session.
    expect((await me((await login(user)).access_token)).status).toBe(200)
  })

  it('keeps every ended session revoked in KV until its refresh token would have expired', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const second = await login(user)
    expect204(await api('POST', '/auth/logout-all', undefined, second.access_token))
    for (const pair of [tokens, second]) {
      const sid = sidOf(pair.refresh_token)
      const refreshExp = decodeJwt(pair.refresh_token).exp!
      const { keys } = await env.REVOKED_TOKENS.list({ prefix: revokedSessionKey(sid) })
      expect(keys).toHaveLength(1)
      expect(keys[0]!.expiration).toBeGreaterThanOrEqual(refreshExp)
      expect(keys[0]!.expiration).toBeLessThanOrEqual(refreshExp + 60)
    }
  })

  it('revokes the calling token even when its session was minted elsewhere', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const minted = await mintToken({ sub: String(user.id), sid: crypto.randomUUID() })
    expect((await me(minted)).status).toBe(200)

    expect204(await api('POST', '/auth/logout-all', undefined, minted))
    await expectProblem(await me(minted), 401, 'token_revoked')
    await expectProblem(await me(tokens.access_token), 401, 'token_revoked')
    await expectProblem(await refresh(tokens.refresh_token), 401, 'token_revoked')
  })

  it('answers 401 not_authenticated without a token', async ({ expect }) => {
    const res = await api('POST', '/auth/logout-all')
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
    await expectProblem(res, 401, 'not_authenticated')
  })
})

describe('Unicode usernames', () => {
  const PASSWORD = 'correct horse battery staple'
  const suffix = (): string => crypto.randomUUID().slice(0, 8)
  const freshEmail = (): string => `${uniqueName('mail')}@example.com`

  function register(username: string, password = PASSWORD): Promise<Response> {
    return api('POST', '/auth/register', { username, email: freshEmail(), password })
  }

  async function loginAs(username: string, password = PASSWORD): Promise<string> {
    const res = await api('POST', '/auth/token', { username, password })
    if (res.status !== 200)
      throw new Error(`login as ${JSON.stringify(username)} failed: ${res.status} ${await res.text()}`)
    return decodeJwt(((await res.json()) as TokenPair).access_token).sub!
  }

  /** A row as the code before username keys wrote it: the old columns only, raw SQL. */
  async function insertPreMigrationRow(username: string, password: string): Promise<number> {
    const { passwordPepper } = getConfig(env)
    const now = Date.now()
    const row = await env.DB.prepare(
      `INSERT INTO users (username, email, email_verified, is_admin, password_hash, created_at, updated_at)
       VALUES (?, ?, 0, 0, ?, ?, ?) RETURNING id`,
    )
      .bind(username, freshEmail(), await hashPassword(password, passwordPepper), now, now)
      .first<{ id: number }>()
    return row!.id
  }

  it('answers 409 username_taken to a name that differs from a taken one only in non-ASCII case', async () => {
    const s = suffix()
    expect201(await register(`Émile_${s}`))
    await expectProblem(await register(`émile_${s}`), 409, 'username_taken')
    await expectProblem(await register(`ÉMILE_${s.toUpperCase()}`), 409, 'username_taken')
  })

  it('folds ß, ẞ and SS together, and compatibility forms (full-width letters, ligatures) with their plain letters', async () => {
    const s = suffix()
    expect201(await register(`straße_${s}`))
    await expectProblem(await register(`STRASSE_${s}`), 409, 'username_taken')
    await expectProblem(await register(`STRAẞE_${s}`), 409, 'username_taken')
    expect201(await register(`office_${s}`))
    await expectProblem(await register(`oﬃce_${s}`), 409, 'username_taken')
    await expectProblem(await register(`ＯＦＦＩＣＥ_${s}`), 409, 'username_taken')
  })

  it('logs in by a non-ASCII username in any case', async ({ expect }) => {
    const s = suffix()
    const res = await register(`Émile_${s}`)
    expect(res.status).toBe(201)
    const { id } = (await res.json()) as PrivateUser
    for (const spelling of [`Émile_${s}`, `ÉMILE_${s.toUpperCase()}`, `émile_${s}`, `E\u0301mile_${s}`]) {
      expect(await loginAs(spelling)).toBe(String(id))
    }
  })

  it.for([
    ['U+3164 HANGUL FILLER', '\u3164\u3164\u3164'],
    ['U+2800 BRAILLE PATTERN BLANK', '\u2800\u2800\u2800'],
    ['U+FFA0 HALFWIDTH HANGUL FILLER', '\uFFA0\uFFA0\uFFA0'],
    ['U+115F and U+1160 HANGUL CHOSEONG/JUNGSEONG FILLER', '\u115F\u1160\u115F'],
    ['a visible name hiding a filler', 'adm\u3164in'],
    ['a variation selector', 'admin\uFE0F'],
    ['combining marks only', '\u0301\u0301\u0301'],
    ['a full-width "@"', 'user＠example'],
  ] as const)('answers 400 validation_failed to a username with %s', async ([, username], { expect }) => {
    const problem = await expectProblem(await register(username), 400, 'validation_failed')
    expect(problem.errors?.map((e) => e.path)).toEqual(['username'])
    expect(problem.errors?.[0]?.message).toMatch(/invisible or blank|look-alikes|at least one letter/)
  })

  it('keeps the login of a row written before username keys existed, in any case', async ({ expect }) => {
    const s = suffix()
    const id = await insertPreMigrationRow(`Ödön_${s}`, PASSWORD)
    for (const spelling of [`ödön_${s}`, `ÖDÖN_${s.toUpperCase()}`, `Ödön_${s}`]) {
      expect(await loginAs(spelling)).toBe(String(id))
    }
    await expectProblem(await register(`ödön_${s}`), 409, 'username_taken')
  })

  it('answers 409 username_taken to a name that an old row, not yet keyed, is in another case', async () => {
    const s = suffix()
    await insertPreMigrationRow(`Ærø_${s}`, PASSWORD)
    await expectProblem(await register(`ærø_${s}`), 409, 'username_taken')
  })

  it('keeps both logins when two old rows are the same name in another case', async ({ expect }) => {
    const s = suffix()
    // SQLite's lower() told these apart (it folds A-Z only), so both could register.
    const older = await insertPreMigrationRow(`Élodie_${s}`, 'the older password')
    const newer = await insertPreMigrationRow(`élodie_${s}`, 'the newer password')
    // The older account keeps the name in every case; the newer one logs in as it is spelled.
    for (const spelling of [`Élodie_${s}`, `éLODIE_${s.toUpperCase()}`, `ÉLODIE_${s}`]) {
      expect(await loginAs(spelling, 'the older password')).toBe(String(older))
    }
    expect(await loginAs(`élodie_${s}`, 'the newer password')).toBe(String(newer))
    await expectProblem(await register(`ÉLODIE_${s.toUpperCase()}`), 409, 'username_taken')
  })
})

function expect201(res: Response): void {
  if (res.status !== 201) throw new Error(`expected 201, got ${res.status}`)
}
