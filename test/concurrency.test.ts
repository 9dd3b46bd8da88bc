import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it, vi } from 'vitest'
import worker from '../src/index'
import {
  BASE_URL,
  api,
  decodeJwt,
  expectProblem,
  login,
  registerAndLogin,
  registerUser,
  tokenFromEmail,
  uniqueName,
} from './helpers'
import type { TokenPair } from './helpers'

// Issue 6, point 5: concurrent registrations, refreshes of one refresh token, post writes and
// subscriber confirmations — no 500, no lost or duplicated rows. Requests are fired together with
// Promise.all against the real local D1 and KV; nothing here sleeps.

const PASSWORD = 'correct horse battery staple'

async function count(sql: string, ...params: unknown[]): Promise<number> {
  const row = await env.DB.prepare(sql)
    .bind(...params)
    .first<{ n: number }>()
  return row!.n
}

function statuses(responses: Response[]): number[] {
  return responses.map((res) => res.status)
}

function refresh(refreshToken: string): Promise<Response> {
  return api('POST', '/auth/token/refresh', { refresh_token: refreshToken })
}

interface SessionState {
  current_jti: string
  previous_jti: string | null
  rotated_at: number | null
  revoked_at: number | null
}

function sessionOf(token: string): Promise<SessionState | null> {
  return env.DB.prepare('SELECT current_jti, previous_jti, rotated_at, revoked_at FROM sessions WHERE sid = ?')
    .bind(decodeJwt(token).payload.sid as string)
    .first<SessionState>()
}

// With no reuse grace, every replay of a rotated token is reuse. Built once: config and keys are
// memoised per env object (src/config.ts, src/middleware/token-keys.ts).
const noGraceEnv = { ...env, REFRESH_REUSE_GRACE: '0' }

async function refreshWithoutGrace(refreshToken: string): Promise<Response> {
  const ctx = createExecutionContext()
  const res = await worker.fetch(
    new Request(`${BASE_URL}/api/v1/auth/token/refresh`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: refreshToken }),
    }),
    noGraceEnv,
    ctx,
  )
  await waitOnExecutionContext(ctx)
  return res
}

describe('concurrent registrations', () => {
  it('of one username (in any case): exactly one account lands, the rest are 409 username_taken', async () => {
    const username = uniqueName('race')
    const attempts = Array.from({ length: 8 }, (_, i) => ({
      username: i % 2 === 0 ? username : username.toUpperCase(),
      email: `${username}_${i}@example.com`,
      password: PASSWORD,
    }))

    const responses = await Promise.all(attempts.map((body) => api('POST', '/auth/register', body)))

    expect(statuses(responses).filter((s) => s === 201)).toHaveLength(1)
    expect(statuses(responses).filter((s) => s === 409)).toHaveLength(7)
    const winner = responses.findIndex((res) => res.status === 201)
    for (const res of responses.filter((r) => r.status === 409)) await expectProblem(res, 409, 'username_taken')
    const created = (await responses[winner]!.json()) as { id: number; email: string }
    expect(created.email).toBe(attempts[winner]!.email)
    expect(await count('SELECT COUNT(*) AS n FROM users WHERE lower(username) = lower(?)', username)).toBe(1)
    // The losers' batches (user, verification token, email) rolled back whole.
    const emails = attempts.map((a) => a.email)
    const placeholders = emails.map(() => '?').join(', ')
    expect(await count(`SELECT COUNT(*) AS n FROM one_time_tokens WHERE email IN (${placeholders})`, ...emails)).toBe(1)
    expect(await count(`SELECT COUNT(*) AS n FROM email_outbox WHERE recipient IN (${placeholders})`, ...emails)).toBe(
      1,
    )
    expect(await count('SELECT COUNT(*) AS n FROM one_time_tokens WHERE user_id = ?', created.id)).toBe(1)
  })

  it('of distinct usernames: every account lands with its own verification token and email', async () => {
    const names = Array.from({ length: 8 }, () => uniqueName('many'))

    const responses = await Promise.all(
      names.map((username) =>
        api('POST', '/auth/register', { username, email: `${username}@example.com`, password: PASSWORD }),
      ),
    )

    expect(statuses(responses)).toEqual(names.map(() => 201))
    const ids = await Promise.all(responses.map(async (res) => ((await res.json()) as { id: number }).id))
    expect(new Set(ids).size).toBe(names.length)
    const placeholders = names.map(() => '?').join(', ')
    expect(await count(`SELECT COUNT(*) AS n FROM users WHERE username IN (${placeholders})`, ...names)).toBe(
      names.length,
    )
    const idList = ids.map(() => '?').join(', ')
    expect(await count(`SELECT COUNT(*) AS n FROM one_time_tokens WHERE user_id IN (${idList})`, ...ids)).toBe(
      names.length,
    )
    const emails = names.map((n) => `${n}@example.com`)
    expect(await count(`SELECT COUNT(*) AS n FROM email_outbox WHERE recipient IN (${placeholders})`, ...emails)).toBe(
      names.length,
    )
  })
})

describe('concurrent refreshes of one refresh token', () => {
  it('within the grace window: all 200 with one identical refresh token, and exactly one rotation', async () => {
    const { tokens } = await registerAndLogin()
    const presentedJti = decodeJwt(tokens.refresh_token).payload.jti

    const responses = await Promise.all(Array.from({ length: 10 }, () => refresh(tokens.refresh_token)))

    expect(statuses(responses)).toEqual(Array.from({ length: 10 }, () => 200))
    const pairs = (await Promise.all(responses.map((res) => res.json()))) as TokenPair[]
    const refreshTokens = new Set(pairs.map((pair) => pair.refresh_token))
    expect(refreshTokens.size).toBe(1)
    const [issued] = [...refreshTokens]
    expect(issued).not.toBe(tokens.refresh_token)
    // One rotation: the presented token is the previous member, the one handed out the current.
    const session = await sessionOf(tokens.refresh_token)
    expect(session).toMatchObject({
      previous_jti: presentedJti,
      current_jti: decodeJwt(issued!).payload.jti,
      revoked_at: null,
    })
    expect(session!.rotated_at).not.toBeNull()
    // Every access token handed out works, and the family goes on from the one refresh token.
    const me = await Promise.all(pairs.map((pair) => api('GET', '/users/me', undefined, pair.access_token)))
    expect(statuses(me)).toEqual(pairs.map(() => 200))
    expect((await refresh(issued!)).status).toBe(200)
  })

  // Regression guard (src/sessions/rotate.ts, replayRotatedToken): with REFRESH_REUSE_GRACE=0 a loser
  // whose `now` is not later than the winner's rotated_at (same millisecond, or taken before the
  // winner committed) would pass `now - rotatedAt <= 0` and be answered 200 as a grace replay, if
  // a zero grace did not disable the window outright. The clock is frozen here so every request
  // sees that same instant and the race is certain.
  it('without a grace window: exactly one 200, the rest 401 token_reused or token_revoked, never 500', async () => {
    const { tokens } = await registerAndLogin()

    vi.useFakeTimers({ toFake: ['Date'] })
    vi.setSystemTime(Date.now())
    const responses = await Promise.all(
      Array.from({ length: 10 }, () => refreshWithoutGrace(tokens.refresh_token)),
    ).finally(() => vi.useRealTimers())

    expect(statuses(responses).filter((s) => s === 200)).toHaveLength(1)
    expect(statuses(responses).filter((s) => s === 401)).toHaveLength(9)
    for (const res of responses.filter((r) => r.status === 401)) {
      const body = (await res.clone().json()) as { code: string }
      expect(['token_reused', 'token_revoked']).toContain(body.code)
      await expectProblem(res, 401, body.code)
    }
    // Reuse was detected, so the whole session (the winner's new token too) is revoked.
    const session = await sessionOf(tokens.refresh_token)
    expect(session!.revoked_at).not.toBeNull()
    const winner = (await responses.find((res) => res.status === 200)!.json()) as TokenPair
    await expectProblem(await refreshWithoutGrace(winner.refresh_token), 401, 'token_revoked')
  })

  it('after the grace window has passed (rotated_at moved back): replays are refused, never 500', async () => {
    const { tokens } = await registerAndLogin()
    const first = await refresh(tokens.refresh_token)
    expect(first.status).toBe(200)
    const sid = decodeJwt(tokens.refresh_token).payload.sid as string
    await env.DB.prepare('UPDATE sessions SET rotated_at = ? WHERE sid = ?')
      .bind(Date.now() - 60_000, sid)
      .run()

    const responses = await Promise.all(Array.from({ length: 10 }, () => refresh(tokens.refresh_token)))

    expect(statuses(responses).filter((s) => s === 401)).toHaveLength(10)
    const codes = await Promise.all(responses.map(async (res) => ((await res.json()) as { code: string }).code))
    expect(codes).toContain('token_reused')
    for (const code of codes) expect(['token_reused', 'token_revoked']).toContain(code)
    expect((await sessionOf(tokens.refresh_token))!.revoked_at).not.toBeNull()
  })
})

describe('concurrent post writes', () => {
  it('50 creations by 5 users all land once, with distinct ids, rows and search entries', async () => {
    const authors = await Promise.all(Array.from({ length: 5 }, () => registerAndLogin()))
    const marker = uniqueName('burst').replace(/_/g, '')
    const writes = authors.flatMap(({ tokens }, a) =>
      Array.from({ length: 10 }, (_, i) =>
        api('POST', '/posts', { title: `${marker} ${a}-${i}`, body: 'concurrent' }, tokens.access_token),
      ),
    )

    const responses = await Promise.all(writes)

    expect(statuses(responses)).toEqual(writes.map(() => 201))
    const posts = (await Promise.all(responses.map((res) => res.json()))) as {
      id: number
      title: string
      author: { id: number }
    }[]
    expect(new Set(posts.map((post) => post.id)).size).toBe(50)
    expect(new Set(posts.map((post) => post.title)).size).toBe(50)
    for (const { user } of authors) {
      expect(await count('SELECT COUNT(*) AS n FROM posts WHERE author_id = ?', user.id)).toBe(10)
      expect(posts.filter((post) => post.author.id === user.id)).toHaveLength(10)
    }
    expect(await count('SELECT COUNT(*) AS n FROM posts_fts WHERE posts_fts MATCH ?', `"${marker}"`)).toBe(50)
  })

  it('concurrent PATCHes of one post: no 500, and the final state is one of the submitted ones', async () => {
    const { tokens } = await registerAndLogin()
    const created = await api('POST', '/posts', { title: 'original', body: 'original body' }, tokens.access_token)
    expect(created.status).toBe(201)
    const { id } = (await created.json()) as { id: number }
    const marker = uniqueName('patch').replace(/_/g, '')
    const changes = Array.from({ length: 10 }, (_, i) => ({ title: `${marker} v${i}`, body: `${marker} body v${i}` }))

    const responses = await Promise.all(
      changes.map((change) => api('PATCH', `/posts/${id}`, change, tokens.access_token)),
    )

    expect(statuses(responses)).toEqual(changes.map(() => 200))
    const final = await env.DB.prepare('SELECT title, body FROM posts WHERE id = ?')
      .bind(id)
      .first<{ title: string; body: string }>()
    expect(changes).toContainEqual(final)
    const read = await api('GET', `/posts/${id}`, undefined, tokens.access_token)
    expect(await read.json()).toMatchObject(final!)
    // The search index followed every update: only the final version is found.
    const { results } = await env.DB.prepare('SELECT rowid AS id FROM posts_fts WHERE posts_fts MATCH ?')
      .bind(`"${marker}"`)
      .all<{ id: number }>()
    expect(results).toEqual([{ id }])
    expect(await count('SELECT COUNT(*) AS n FROM posts WHERE id = ?', id)).toBe(1)
  })
})

describe('concurrent subscriber writes', () => {
  it('confirmations with one token: exactly one 200, the rest 400; the token is spent once', async () => {
    const email = `${uniqueName('confirm')}@example.com`
    expect((await api('POST', '/subscribers', { email })).status).toBe(202)
    const token = await tokenFromEmail(email, 'confirm-subscription')

    const responses = await Promise.all(Array.from({ length: 8 }, () => api('POST', '/subscribers/confirm', { token })))

    expect(statuses(responses).filter((s) => s === 200)).toHaveLength(1)
    expect(statuses(responses).filter((s) => s === 400)).toHaveLength(7)
    for (const res of responses.filter((r) => r.status === 400)) await expectProblem(res, 400, 'token_invalid')
    expect(await responses.find((res) => res.status === 200)!.json()).toEqual({ email, status: 'active' })
    const subscriber = await env.DB.prepare(
      'SELECT id, status, confirmed_at FROM subscribers WHERE lower(email) = lower(?)',
    )
      .bind(email)
      .all<{ id: number; status: string; confirmed_at: number | null }>()
    expect(subscriber.results).toHaveLength(1)
    expect(subscriber.results[0]!.status).toBe('active')
    const tokens = await env.DB.prepare('SELECT used_at FROM one_time_tokens WHERE subscriber_id = ?')
      .bind(subscriber.results[0]!.id)
      .all<{ used_at: number | null }>()
    expect(tokens.results).toHaveLength(1)
    // Spent by the one request that confirmed: the same instant is on both rows.
    expect(tokens.results[0]!.used_at).not.toBeNull()
    expect(tokens.results[0]!.used_at).toBe(subscriber.results[0]!.confirmed_at)
  })

  it('subscribes of one new email: all 202, one subscriber row, and the per-recipient limit holds under the burst', async () => {
    const email = `${uniqueName('burst')}@example.com`
    const requests = 6

    const responses = await Promise.all(
      Array.from({ length: requests }, (_, i) =>
        api('POST', '/subscribers', { email: i % 2 === 0 ? email : email.toUpperCase() }),
      ),
    )

    expect(statuses(responses)).toEqual(Array.from({ length: requests }, () => 202))
    const rows = await env.DB.prepare('SELECT id, status FROM subscribers WHERE lower(email) = lower(?)')
      .bind(email)
      .all<{ id: number; status: string }>()
    expect(rows.results).toHaveLength(1)
    expect(rows.results[0]!.status).toBe('pending')
    // At most 3 confirmations an hour to one address, however many requests race (the count is
    // part of the token's INSERT); each token points at the one row, each email carries one.
    const mailed = 3
    expect(await count('SELECT COUNT(*) AS n FROM one_time_tokens WHERE lower(email) = lower(?)', email)).toBe(mailed)
    expect(await count('SELECT COUNT(*) AS n FROM one_time_tokens WHERE subscriber_id = ?', rows.results[0]!.id)).toBe(
      mailed,
    )
    expect(await count('SELECT COUNT(*) AS n FROM email_outbox WHERE lower(recipient) = lower(?)', email)).toBe(mailed)
  })

  it('password resets of one address: the per-recipient limit holds under a burst', async () => {
    const user = await registerUser()
    const responses = await Promise.all(
      Array.from({ length: 8 }, () => api('POST', '/auth/password/reset', { email: user.email })),
    )
    expect(statuses(responses)).toEqual(Array.from({ length: 8 }, () => 202))
    expect(
      await count(
        "SELECT COUNT(*) AS n FROM one_time_tokens WHERE user_id = ? AND purpose = 'password_reset'",
        user.id,
      ),
    ).toBe(3)
  })
})

describe('concurrent logins of one user', () => {
  it('each starts its own session; none is lost', async () => {
    const user = await registerUser()

    const pairs = await Promise.all(Array.from({ length: 5 }, () => login(user)))

    expect(new Set(pairs.map((pair) => decodeJwt(pair.refresh_token).payload.sid)).size).toBe(5)
    expect(await count('SELECT COUNT(*) AS n FROM sessions WHERE user_id = ? AND revoked_at IS NULL', user.id)).toBe(5)
  })
})
