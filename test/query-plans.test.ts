import { createExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { beforeAll, describe, expect, it } from 'vitest'
import { deliverDueEmails } from '../src/email/outbox'
import type { MailTransport } from '../src/email/transports'
import worker from '../src/index'
import { createDb } from '../src/db/client'
import {
  advanceSnapshot,
  cancelNewsletter,
  claimBatches,
  countActiveSubscribers,
  dueNewsletters,
  failDeadLetteredBatch,
  findNewsletter,
  findNewsletterOfPost,
  insertNewsletter,
  recordBatches,
  rescheduleNewsletter,
  stalledSends,
  startNewsletter,
  takeSnapshotChunk,
} from '../src/db/newsletters'
import { runScheduledMaintenance } from '../src/scheduled'
import { BASE_URL, apiWithEnv, registerAdmin, registerAndLogin, tokenFromEmail, uniqueName } from './helpers'
import type { TokenPair } from './helpers'
import { TEST_PROVIDERS, signIdToken } from './oidc-provider'
import { SoftAuthenticator } from './webauthn-authenticator'

// Issue 6, point 2: every query the API makes on a list or lookup path is run through
// `EXPLAIN QUERY PLAN` with the parameters it was bound with, and a full table scan fails the
// test. The SQL is not rewritten by hand: the worker runs against a D1 binding that records every
// statement it prepares (and its bound values), so the plans are those of the queries the code
// really issues.

interface Recorded {
  sql: string
  params: unknown[]
}

interface PlanRow {
  id: number
  parent: number
  detail: string
}

const recorded: Recorded[] = []

function recordStatement(sql: string, statement: D1PreparedStatement, originals: WeakMap<object, D1PreparedStatement>) {
  const proxy = new Proxy(statement, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (property === 'bind') {
        return (...params: unknown[]) => {
          recorded.push({ sql, params })
          return target.bind(...params)
        }
      }
      if (typeof value !== 'function') return value
      if (property === 'all' || property === 'run' || property === 'first' || property === 'raw') {
        recorded.push({ sql, params: [] })
      }
      return (value as (...a: unknown[]) => unknown).bind(target)
    },
  })
  originals.set(proxy, statement)
  return proxy
}

/** A D1 binding (and its Sessions API sessions) that records every prepared statement. */
function recordingD1(db: D1Database): D1Database {
  const originals = new WeakMap<object, D1PreparedStatement>()
  const wrap = <T extends object>(target: T): T =>
    new Proxy(target, {
      get(inner, property) {
        const value = Reflect.get(inner, property, inner) as unknown
        if (property === 'prepare') {
          return (query: string) => recordStatement(query, (inner as unknown as D1Database).prepare(query), originals)
        }
        if (property === 'batch') {
          return (statements: D1PreparedStatement[]) =>
            (inner as unknown as D1Database).batch(statements.map((s) => originals.get(s) ?? s))
        }
        if (property === 'withSession') {
          return (constraint?: string) => wrap((inner as unknown as D1Database).withSession(constraint))
        }
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(inner) : value
      },
    })
  return wrap(db)
}

const recordingDb = recordingD1(env.DB)
// Built once: config and keys are memoised per env object (src/config.ts, src/middleware/token-keys.ts).
const recordingEnv = { ...env, DB: recordingDb }

/** Runs `action` and returns the statements it made, de-duplicated by SQL text. */
async function capture(action: () => Promise<unknown>): Promise<Recorded[]> {
  recorded.length = 0
  await action()
  const bySql = new Map<string, Recorded>()
  for (const statement of recorded) if (!bySql.has(statement.sql)) bySql.set(statement.sql, statement)
  recorded.length = 0
  return [...bySql.values()]
}

// Credentials also keep public GETs out of the edge cache, so every request reaches D1; background
// work (outbox delivery after a write) uses the same recorded binding.
function call(method: string, path: string, body?: unknown, token?: string): Promise<Response> {
  return apiWithEnv(recordingEnv, method, path, body, token)
}

async function expectStatus(res: Promise<Response>, status: number): Promise<void> {
  expect((await res).status).toBe(status)
}

async function planOf(statement: Recorded): Promise<PlanRow[]> {
  const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${statement.sql}`)
    .bind(...statement.params)
    .all<PlanRow>()
  return results
}

/**
 * Why a plan is unacceptable, or null. A bare `SCAN <table>` reads every row; `SCAN … USING
 * INDEX` walks an index in order (and stops at LIMIT); FTS5's `VIRTUAL TABLE INDEX` and scans of
 * constant rows, of a VALUES list written in the statement (a post's slug candidates) or of
 * materialised subqueries are fine. On a keyset list a temp B-tree for ORDER BY
 * means every matching row is read and sorted before the first one is returned.
 */
function planProblem(plan: PlanRow[], keysetList: boolean): string | null {
  for (const { detail } of plan) {
    if (/^SCAN (CONSTANT ROW|\d+-ROW VALUES CLAUSE|\(subquery-\d+\)|\w+ VIRTUAL TABLE INDEX)/.test(detail)) continue
    const scan = /^SCAN (\w+)(.*)$/.exec(detail)
    if (scan !== null && !/USING (COVERING |INTEGER PRIMARY KEY|.*INDEX)/.test(scan[2]!))
      return `full table scan: ${detail}`
    if (keysetList && /USE TEMP B-TREE FOR (RIGHT PART OF )?ORDER BY/.test(detail))
      return `sort defeats the keyset index: ${detail}`
  }
  return null
}

/** Every statement's plan, and the problems found; statements named by `pattern` must be there. */
async function explainAll(statements: Recorded[], keysetList: (sql: string) => boolean) {
  const report: { sql: string; plan: string[]; problem: string | null }[] = []
  for (const statement of statements) {
    const plan = await planOf(statement)
    report.push({
      sql: statement.sql,
      plan: plan.map((row) => row.detail),
      problem: planProblem(plan, keysetList(statement.sql)),
    })
  }
  return report
}

/**
 * Keyset lists are the selects ordered by (created_at, id), and the posts' (published_at, id) and,
 * for drafts, (updated_at, id). A full-text search is exempt: its candidates come from the FTS
 * index in rowid order, so they are always sorted (only the matches).
 */
const isSelectWithOrderBy = (sql: string): boolean =>
  /^select\b/i.test(sql) &&
  /\border by "\w+"\."(created_at|published_at|updated_at)" (asc|desc), "\w+"\."id"/i.test(sql) &&
  !/posts_fts match/.test(sql)

/** Captures `action`, checks that it issued a statement matching each pattern, and fails on any bad plan. */
async function expectIndexedPlans(
  action: () => Promise<unknown>,
  mustIssue: RegExp[],
  keysetList: (sql: string) => boolean = isSelectWithOrderBy,
): Promise<void> {
  const statements = await capture(action)
  for (const pattern of mustIssue) {
    expect(
      statements.map((s) => s.sql),
      `expected a statement matching ${pattern}`,
    ).toContainEqual(expect.stringMatching(pattern))
  }
  const report = await explainAll(statements, keysetList)
  const bad = report.filter((entry) => entry.problem !== null)
  expect(bad, JSON.stringify(bad, null, 2)).toEqual([])
}

const noEmail: MailTransport = { name: 'none', send: async () => {}, sendBatch: async () => ({ outcome: 'accepted' }) }

let author: { user: { id: number; username: string; email: string }; tokens: TokenPair }
let other: { user: { id: number }; tokens: TokenPair }
let admin: TokenPair
let postId = 0
let subscriberEmail = ''

beforeAll(async () => {
  author = await registerAndLogin()
  other = await registerAndLogin()
  admin = (await registerAdmin()).tokens
  for (let i = 0; i < 6; i += 1) {
    const res = await call(
      'POST',
      '/posts',
      { title: `plan post ${i} aardvark`, body: `body ${i}` },
      author.tokens.access_token,
    )
    expect(res.status).toBe(201)
  }
  const { results } = await env.DB.prepare('SELECT id FROM posts WHERE author_id = ? ORDER BY id DESC LIMIT 1')
    .bind(author.user.id)
    .all<{ id: number }>()
  postId = results[0]!.id
  for (let i = 0; i < 4; i += 1) {
    subscriberEmail = `${uniqueName('sub')}@example.com`
    await expectStatus(call('POST', '/subscribers', { email: subscriberEmail }), 202)
  }
}, 60_000)

/** The `next` link of a list page, as a path under /api/v1. */
async function nextPath(path: string, token: string): Promise<string> {
  const res = await worker.fetch(
    new Request(`${BASE_URL}/api/v1${path}`, { headers: { authorization: `Bearer ${token}` } }),
    recordingEnv,
    createExecutionContext(),
  )
  expect(res.status).toBe(200)
  const { next } = (await res.json()) as { next: string | null }
  expect(next).not.toBeNull()
  const url = new URL(next!)
  return `${url.pathname.replace('/api/v1', '')}${url.search}`
}

describe('the plan check itself', () => {
  it('flags a full table scan and a sorted keyset list, and accepts index walks', async () => {
    const scan = await planOf({ sql: 'SELECT id FROM posts WHERE body = ?', params: ['x'] })
    expect(planProblem(scan, false)).toMatch(/^full table scan: SCAN posts$/)
    const sorted = await planOf({ sql: 'SELECT id FROM posts ORDER BY updated_at DESC LIMIT ?', params: [5] })
    expect(planProblem(sorted, true)).toMatch(/^(full table scan|sort defeats the keyset index)/)
    const walk = await planOf({ sql: 'SELECT id FROM posts ORDER BY created_at DESC, id DESC LIMIT ?', params: [5] })
    expect(planProblem(walk, true)).toBeNull()
    const fts = await planOf({ sql: 'SELECT rowid FROM posts_fts WHERE posts_fts MATCH ?', params: ['"x"'] })
    expect(planProblem(fts, false)).toBeNull()
  })
})

describe('query plans: users', () => {
  it('looks users up by id, lower(username) and lower(email) through an index', async () => {
    await expectIndexedPlans(async () => {
      await expectStatus(call('GET', `/users/${author.user.id}`, undefined, other.tokens.access_token), 200)
      await expectStatus(
        call('POST', '/auth/token', {
          username: author.user.username.toUpperCase(),
          password: 'correct horse battery staple',
        }),
        200,
      )
      await expectStatus(
        call('POST', '/auth/token', {
          username: author.user.email.toUpperCase(),
          password: 'correct horse battery staple',
        }),
        200,
      )
      await expectStatus(call('GET', '/users/me', undefined, author.tokens.access_token), 200)
    }, [/"users"\."id" = \?/, /lower\("users"\."username"\) = lower\(\?\)/, /lower\("users"\."email"\) = lower\(\?\)/])
  })

  it('registers through the lower(email) index (the subquery that links the verification token)', async () => {
    const username = uniqueName()
    await expectIndexedPlans(
      () =>
        expectStatus(
          call('POST', '/auth/register', {
            username,
            email: `${username}@example.com`,
            password: 'correct horse battery staple',
          }),
          201,
        ),
      [/^insert into "users"/, /lower\("users"\."email"\) = lower\(\?\)/],
    )
  })

  it('looks usernames up by key, checks for unkeyed rows and keys them, through indexes', async () => {
    // Two rows as written before username keys (migration 0005): the old columns only, with the
    // author's password hash; one name in two cases, which lower() told apart.
    const legacy = `Ödön_${uniqueName()}`
    for (const username of [legacy, legacy.replace('Ö', 'ö')]) {
      await env.DB.prepare(
        `INSERT INTO users (username, email, email_verified, is_admin, password_hash, created_at, updated_at)
         SELECT ?, ?, 0, 0, password_hash, created_at, updated_at FROM users WHERE id = ?`,
      )
        .bind(username, `${uniqueName()}@example.com`, author.user.id)
        .run()
    }
    const renamed = `Ærø_${uniqueName()}`
    await expectIndexedPlans(async () => {
      // Keys the old rows on the way (the second one apart: its key is taken), then finds the first.
      await expectStatus(
        call('POST', '/auth/token', { username: legacy.toUpperCase(), password: 'correct horse battery staple' }),
        200,
      )
      await expectStatus(call('PATCH', '/users/me', { username: renamed }, other.tokens.access_token), 200)
      await runScheduledMaintenance(recordingEnv, new Date())
    }, [
      /where \("users"\."username_key" = \? or lower\("users"\."username"\) = lower\(\?\)\)/,
      /from "users" where "users"\."username_key" is null order by "users"\."id" limit \?/,
      /^update or ignore "users" set "username_key" = case "users"\."id" when \? then \?/,
      /^update "users" set "username_key" = char\(65535\) \|\| "users"\."id"/,
      /^update "users" set "username" = \?, "username_key" = \?/,
    ])
    const keys = await env.DB.prepare(
      'SELECT username, username_key AS key FROM users WHERE lower(username) IN (lower(?), lower(?), lower(?)) ORDER BY id',
    )
      .bind(legacy, legacy.replace('Ö', 'ö'), renamed)
      .all<{ username: string; key: string }>()
    expect(Object.fromEntries(keys.results.map((row) => [row.username, row.key]))).toEqual({
      [legacy]: legacy.toLowerCase(),
      [legacy.replace('Ö', 'ö')]: expect.stringMatching(/^\uFFFF\d+$/),
      [renamed]: renamed.toLowerCase(),
    })
  })

  it('lists users, first page and a cursor page, in index order', async () => {
    const token = other.tokens.access_token
    const second = await nextPath('/users?limit=1', token)
    await expectIndexedPlans(async () => {
      await expectStatus(call('GET', '/users?limit=1', undefined, token), 200)
      await expectStatus(call('GET', second, undefined, token), 200)
    }, [
      /from "users" order by "users"\."created_at" asc/,
      /from "users" where \("users"\."created_at", "users"\."id"\) > \(\?, \?\)/,
    ])
  })
})

describe('query plans: posts', () => {
  it('lists posts newest and oldest created first, first page and cursor page', async () => {
    const token = other.tokens.access_token
    const newest = await nextPath('/posts?limit=2&ordering=-created_at', token)
    const oldest = await nextPath('/posts?limit=2&ordering=created_at', token)
    await expectIndexedPlans(async () => {
      for (const path of [
        '/posts?limit=2&ordering=-created_at',
        newest,
        '/posts?limit=2&ordering=created_at',
        oldest,
      ]) {
        await expectStatus(call('GET', path, undefined, token), 200)
      }
    }, [
      /order by "posts"\."created_at" desc, "posts"\."id" desc/,
      /order by "posts"\."created_at" asc, "posts"\."id" asc/,
      /\) < \(\?, \?\)/,
      /\) > \(\?, \?\)/,
    ])
  })

  it('lists posts by author (filter and /users/{id}/posts), first page and cursor page', async () => {
    const token = other.tokens.access_token
    const filtered = await nextPath(`/posts?author=${author.user.id}&limit=2`, token)
    const ofUser = await nextPath(`/users/${author.user.id}/posts?limit=2`, token)
    await expectIndexedPlans(async () => {
      for (const path of [
        `/posts?author=${author.user.id}&limit=2`,
        filtered,
        `/users/${author.user.id}/posts?limit=2`,
        ofUser,
      ]) {
        await expectStatus(call('GET', path, undefined, token), 200)
      }
    }, [/"posts"\."author_id" = \?/])
  })

  it('searches posts through the FTS index (q), first page and cursor page', async () => {
    const token = other.tokens.access_token
    const second = await nextPath('/posts?q=aardvark&limit=2', token)
    await expectIndexedPlans(async () => {
      await expectStatus(call('GET', '/posts?q=aardvark&limit=2', undefined, token), 200)
      await expectStatus(call('GET', second, undefined, token), 200)
    }, [/posts_fts match \?/])
  })

  it('reads, updates (as author and as admin) and deletes a post by id', async () => {
    const token = author.tokens.access_token
    await expectIndexedPlans(async () => {
      await expectStatus(call('GET', `/posts/${postId}`, undefined, token), 200)
      await expectStatus(call('PATCH', `/posts/${postId}`, { title: 'patched aardvark' }, token), 200)
      await expectStatus(call('PATCH', `/posts/${postId}`, { title: 'by an admin' }, admin.access_token), 200)
      await expectStatus(call('DELETE', `/posts/${postId}`, undefined, token), 204)
    }, [/where "posts"\."id" = \?/, /^update "posts"/, /^delete from "posts" where "posts"\."id" = \?/])
  })
})

describe('query plans: sessions and one-time tokens', () => {
  it('refreshes, verifies and logs out through the sessions primary key', async () => {
    const { tokens } = await registerAndLogin()
    await expectIndexedPlans(async () => {
      const res = await worker.fetch(
        new Request(`${BASE_URL}/api/v1/auth/token/refresh`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ refresh_token: tokens.refresh_token }),
        }),
        recordingEnv,
        createExecutionContext(),
      )
      expect(res.status).toBe(200)
      const pair = (await res.json()) as TokenPair
      await expectStatus(call('POST', '/auth/token/verify', { token: pair.refresh_token }), 200)
      await expectStatus(call('POST', '/auth/logout', { refresh_token: pair.refresh_token }, pair.access_token), 204)
    }, [
      /from "sessions".*"sessions"\."sid" = \?/,
      /^update "sessions" set .*"current_jti" = \?/,
      /^update "sessions" set "revoked_at" = \? where \("sessions"\."sid" in/,
    ])
  })

  it("lists and ends a user's devices through sessions_user_id_idx and the primary key", async () => {
    const { user, tokens } = await registerAndLogin()
    await expectStatus(
      call('POST', '/auth/token', { username: user.username, password: 'correct horse battery staple' }),
      200,
    )
    const { results } = (await (await call('GET', '/auth/sessions', undefined, tokens.access_token)).json()) as {
      results: { id: string; current: boolean }[]
    }
    const otherId = results.find((session) => !session.current)!.id
    await expectIndexedPlans(async () => {
      await expectStatus(call('GET', '/auth/sessions', undefined, tokens.access_token), 200)
      await expectStatus(call('DELETE', `/auth/sessions/${otherId}`, undefined, tokens.access_token), 204)
      await expectStatus(call('DELETE', `/auth/sessions/${otherId}`, undefined, tokens.access_token), 404)
    }, [
      /^select .* from "sessions" where \("sessions"\."user_id" = \?/,
      /^select "revoked_at" from "sessions" where \("sessions"\."sid" = \?/,
    ])
  })

  it('ends all sessions of a user (logout-all) through sessions_user_id_idx', async () => {
    const { tokens } = await registerAndLogin()
    await expectIndexedPlans(
      () => expectStatus(call('POST', '/auth/logout-all', undefined, tokens.access_token), 204),
      [/^update "sessions" set "revoked_at" = \? where \("sessions"\."user_id" = \?/],
    )
  })

  it('consumes one-time tokens by hash (email verification, subscription confirmation)', async () => {
    const { user } = await registerAndLogin()
    const verification = await tokenFromEmail(user.email, 'verify-email')
    const email = `${uniqueName('confirm')}@example.com`
    await expectStatus(call('POST', '/subscribers', { email }), 202)
    const confirmation = await tokenFromEmail(email, 'confirm-subscription')
    await expectIndexedPlans(async () => {
      await expectStatus(call('POST', '/auth/email/verify', { token: verification }), 204)
      await expectStatus(call('POST', '/subscribers/confirm', { token: confirmation }), 200)
      await expectStatus(call('POST', '/subscribers/confirm', { token: confirmation }), 400)
    }, [
      /^update "one_time_tokens" set "used_at" = \? where \("one_time_tokens"\."token_hash" = \?/,
      /from "one_time_tokens".*"one_time_tokens"\."token_hash" = \?/,
    ])
  })
})

describe('query plans: subscribers', () => {
  it('subscribes through lower(email) and unsubscribes through the unsubscribe hash index', async () => {
    await expectIndexedPlans(async () => {
      await expectStatus(call('POST', '/subscribers', { email: subscriberEmail.toUpperCase() }), 202)
      await expectStatus(call('POST', '/subscribers/unsubscribe', { token: 'A'.repeat(22) }), 400)
    }, [/lower\("subscribers"\."email"\) = lower\(\?\)/, /"subscribers"\."unsubscribe_token_hash" = \?/])
  })

  it('lists subscribers (status filter, no filter, cursor page) in index order', async () => {
    const token = admin.access_token
    const second = await nextPath('/subscribers?limit=1', token)
    const secondPending = await nextPath('/subscribers?status=pending&limit=1', token)
    // One of this file's own subscribers: other files delete theirs, so no id is a given.
    const own = await env.DB.prepare('SELECT id FROM subscribers WHERE email = ?')
      .bind(subscriberEmail)
      .first<{ id: number }>()
    await expectIndexedPlans(async () => {
      for (const path of ['/subscribers?limit=1', second, '/subscribers?status=pending&limit=1', secondPending]) {
        await expectStatus(call('GET', path, undefined, token), 200)
      }
      await expectStatus(call('GET', `/subscribers/${own!.id}`, undefined, token), 200)
    }, [/"subscribers"\."status" = \?/, /order by "subscribers"\."created_at" desc/, /\) < \(\?, \?\)/])
  })

  it('exports subscribers in id chunks (id > ?) through the primary key', async () => {
    await expectIndexedPlans(async () => {
      const res = await worker.fetch(
        new Request(`${BASE_URL}/api/v1/subscribers/export`, {
          headers: { authorization: `Bearer ${admin.access_token}` },
        }),
        recordingEnv,
        createExecutionContext(),
      )
      expect(res.status).toBe(200)
      expect(await res.text()).toContain(subscriberEmail)
    }, [/where "subscribers"\."id" > \? order by "subscribers"\."id" asc/])
  })
})

describe('query plans: email outbox and maintenance', () => {
  it('finds due messages and claims each one through email_outbox_status_next_attempt_idx', async () => {
    // Something to deliver, so the claim and settle statements run too.
    await env.DB.prepare(
      "INSERT INTO email_outbox (recipient, subject, text, next_attempt_at, created_at) VALUES ('plan@example.com', 's', 't', ?, ?)",
    )
      .bind(Date.now() - 1000, Date.now() - 1000)
      .run()
    await expectIndexedPlans(
      async () => {
        const report = await deliverDueEmails(
          createDb({ DB: recordingDb }),
          noEmail,
          'from@example.com',
          new Date(),
          100,
        )
        expect(report.sent).toBeGreaterThanOrEqual(1)
      },
      [
        /from "email_outbox" where \("email_outbox"\."status" in \(\?, \?\)/,
        /^update "email_outbox" set "status" = \?, "attempts" = /,
      ],
      // Not a keyset list: the due query reads each status's due range from the index and sorts
      // that small set (at most `limit` rows are kept).
      () => false,
    )
  })

  it('prunes expired one-time tokens through one_time_tokens_expires_at_idx', async () => {
    const statements = await capture(() => runScheduledMaintenance(recordingEnv, new Date()))
    const prune = statements.filter((s) => /^delete from "one_time_tokens"/.test(s.sql))
    expect(prune).toHaveLength(1)
    const report = await explainAll(prune, () => false)
    expect(report[0]!.problem, JSON.stringify(report)).toBeNull()
  })

  // KNOWN FULL SCAN (src/scheduled.ts): the cron's `DELETE FROM sessions WHERE refresh_expires_at
  // < ?` has no index to use, so every run (every 5 minutes) reads the whole sessions table.
  // Suggested fix: a migration adding `CREATE INDEX sessions_refresh_expires_at_idx ON sessions
  // (refresh_expires_at)` (and the matching index() in src/db/schema.ts).
  it('prunes expired sessions through an index on sessions.refresh_expires_at', async () => {
    const statements = await capture(() => runScheduledMaintenance(recordingEnv, new Date()))
    const prune = statements.filter((s) => /^delete from "sessions"/.test(s.sql))
    expect(prune).toHaveLength(1)
    const report = await explainAll(prune, () => false)
    expect(
      report[0]!.problem,
      'src/scheduled.ts prunes sessions by refresh_expires_at, which no index covers; add ' +
        '`CREATE INDEX sessions_refresh_expires_at_idx ON sessions (refresh_expires_at)`. ' +
        JSON.stringify(report),
    ).toBeNull()
  })
})

describe('query plans: native sign-in (OIDC)', () => {
  it('finds identities by (provider, sub) and by user, checks free usernames, links and unlinks through indexes', async () => {
    const idToken = (sub: string, email: string) =>
      signIdToken({
        kid: 'google-1',
        iss: 'https://accounts.google.com',
        aud: TEST_PROVIDERS.google.audiences[0],
        sub,
        email,
        email_verified: true,
        nonce: 'plan',
      })
    const sub = `plan-${uniqueName()}`
    const email = `${uniqueName('plan')}@gmail.com`
    await expectIndexedPlans(async () => {
      await expectStatus(call('POST', '/auth/oidc/google', { id_token: await idToken(sub, email), nonce: 'plan' }), 200)
      await expectStatus(call('POST', '/auth/oidc/google', { id_token: await idToken(sub, email), nonce: 'plan' }), 200)
      await expectStatus(
        call(
          'POST',
          '/auth/oidc/google/link',
          { id_token: await idToken(`${sub}-2`, `${uniqueName('plan')}@gmail.com`), nonce: 'plan' },
          author.tokens.access_token,
        ),
        204,
      )
      await expectStatus(call('GET', '/users/me', undefined, author.tokens.access_token), 200)
      await expectStatus(call('DELETE', '/auth/oidc/google/link', undefined, author.tokens.access_token), 204)
    }, [
      /"external_identities"\."provider" = \?/,
      /"external_identities"\."user_id" = \?/,
      /^insert into "external_identities"/,
      /^delete from "external_identities"/,
      /"users"\."username_key" in/,
    ])
  })
})

const DAY = 86_400_000

describe('query plans: posts life cycle', () => {
  let writer: { user: { id: number }; tokens: TokenPair }
  const slugs: string[] = []

  beforeAll(async () => {
    writer = await registerAndLogin()
    const token = writer.tokens.access_token
    // Scheduled weeks ahead: well before the far-future post src/db/posts.test.ts schedules, so
    // its "next publication" stays its own.
    for (let i = 0; i < 3; i += 1) {
      const at = new Date(Date.now() + (20 + i) * DAY).toISOString()
      for (const body of [
        { title: `plan draft ${i}`, body: 'b', status: 'draft' },
        { title: `plan scheduled ${i}`, body: 'b', status: 'scheduled', published_at: at },
        { title: `plan published ${i}`, body: 'b', slug: `plan-${uniqueName('slug').replaceAll('_', '-')}` },
      ]) {
        const res = await call('POST', '/posts', body, token)
        expect(res.status).toBe(201)
        slugs.push(((await res.json()) as { slug: string }).slug)
      }
    }
  }, 60_000)

  it('lists published posts by publication time, both ways, first page and cursor page, with the next publication', async () => {
    const token = other.tokens.access_token
    const newest = await nextPath('/posts?limit=2', token)
    const oldest = await nextPath('/posts?limit=2&ordering=published_at', token)
    await expectIndexedPlans(async () => {
      for (const path of ['/posts?limit=2', newest, '/posts?limit=2&ordering=published_at', oldest]) {
        await expectStatus(call('GET', path, undefined, token), 200)
      }
    }, [
      /"posts"\."published_at" <= \?.*order by "posts"\."published_at" desc, "posts"\."id" desc/,
      /"posts"\."published_at" <= \?.*order by "posts"\."published_at" asc, "posts"\."id" asc/,
      /\("posts"\."published_at", "posts"\."id"\) < \(\?, \?\)/,
      /\("posts"\."published_at", "posts"\."id"\) > \(\?, \?\)/,
      /^select min\("published_at"\) from "posts" where "posts"\."published_at" > \?/,
    ])
  })

  it("lists an author's published posts by publication time, both ways (author filter and /users/{id}/posts)", async () => {
    const token = other.tokens.access_token
    const id = author.user.id
    const ascending = await nextPath(`/posts?author=${id}&ordering=published_at&limit=2`, token)
    const ofUser = await nextPath(`/users/${id}/posts?limit=2`, token)
    await expectIndexedPlans(async () => {
      for (const path of [
        `/posts?author=${id}&ordering=published_at&limit=2`,
        ascending,
        `/users/${id}/posts?limit=2`,
        ofUser,
      ]) {
        await expectStatus(call('GET', path, undefined, token), 200)
      }
    }, [
      /"posts"\."author_id" = \?.*order by "posts"\."published_at" asc, "posts"\."id" asc/,
      /"posts"\."author_id" = \?.*order by "posts"\."published_at" desc, "posts"\."id" desc/,
    ])
  })

  it("lists an author's drafts by last change (author filter) through posts_author_drafts_updated_at_id_idx", async () => {
    const token = writer.tokens.access_token
    const path = `/posts?status=draft&author=${writer.user.id}&limit=2`
    const second = await nextPath(path, token)
    await expectIndexedPlans(async () => {
      for (const page of [path, second]) await expectStatus(call('GET', page, undefined, token), 200)
      await expectStatus(call('GET', path, undefined, admin.access_token), 200)
    }, [
      /"posts"\."published_at" is null.*"posts"\."author_id" = \?\) order by "posts"\."updated_at" desc, "posts"\."id" desc/,
      /\("posts"\."updated_at", "posts"\."id"\) < \(\?, \?\)/,
    ])
  })

  // `published_at is null` once took the full publication index plus a sort of every author's
  // drafts; since migration 0011 that index covers published rows only, and drafts walk theirs.
  it('lists drafts by last change (own, and an admin’s view of everyone’s) in index order, first page and cursor page', async () => {
    const token = writer.tokens.access_token
    const own = await nextPath('/posts?status=draft&limit=2', token)
    await expectIndexedPlans(async () => {
      for (const path of ['/posts?status=draft&limit=2', own]) {
        await expectStatus(call('GET', path, undefined, token), 200)
      }
      await expectStatus(call('GET', '/posts?status=draft&limit=2', undefined, admin.access_token), 200)
    }, [
      /"posts"\."published_at" is null and \("posts"\."author_id" = \? or exists .*\)\)\) order by "posts"\."updated_at" desc, "posts"\."id" desc/,
      /\("posts"\."updated_at", "posts"\."id"\) < \(\?, \?\)/,
    ])
  })

  it('lists scheduled posts by publication time, both ways, first page and cursor page', async () => {
    const token = writer.tokens.access_token
    const soonest = await nextPath('/posts?status=scheduled&ordering=published_at&limit=2', token)
    const latest = await nextPath('/posts?status=scheduled&limit=2', token)
    await expectIndexedPlans(async () => {
      for (const path of [
        '/posts?status=scheduled&ordering=published_at&limit=2',
        soonest,
        '/posts?status=scheduled&limit=2',
        latest,
        `/posts?status=scheduled&author=${writer.user.id}&limit=2`,
      ]) {
        await expectStatus(call('GET', path, undefined, token), 200)
      }
    }, [
      /"posts"\."published_at" > \?.*order by "posts"\."published_at" asc, "posts"\."id" asc/,
      /"posts"\."published_at" > \?.*order by "posts"\."published_at" desc, "posts"\."id" desc/,
    ])
  })

  it('reads a post by slug (anonymous, and with the caller) through posts_slug_unique', async () => {
    const [, , published, , , another] = slugs as [string, string, string, string, string, string]
    await expectIndexedPlans(async () => {
      await expectStatus(call('GET', `/posts/by-slug/${published}`), 200)
      await expectStatus(call('GET', `/posts/by-slug/${another}`, undefined, writer.tokens.access_token), 200)
      await expectStatus(call('GET', '/posts/by-slug/no-such-post-here', undefined, other.tokens.access_token), 404)
    }, [/^select .* from "posts" inner join "users" .* where "posts"\."slug" = \?/])
  })

  it('allocates a slug from the title (the INSERT looks its candidates up by the slug index) and changes it by id', async () => {
    const token = writer.tokens.access_token
    const title = `plan slug ${uniqueName('taken')}`
    await expectIndexedPlans(async () => {
      const first = await call('POST', '/posts', { title, body: 'b' }, token)
      expect(first.status).toBe(201)
      const second = await call('POST', '/posts', { title, body: 'b' }, token)
      expect(second.status).toBe(201)
      const { id, slug } = (await second.json()) as { id: number; slug: string }
      expect(slug).toMatch(/-2$/)
      await expectStatus(call('PATCH', `/posts/${id}`, { slug: `${slug}-renamed` }, token), 200)
    }, [/^insert into "posts" .*coalesce\(\(select column1 from \(values/, /^update "posts" set .*"slug" = \?/])
  })
})

describe('query plans: newsletters', () => {
  /** Temp B-trees are fine here only for the ledger rows of one batch (at most 100): nothing else sorts. */
  const batchSorts = (sql: string): boolean => !/"newsletter_deliveries"\."batch_no" = \?/.test(sql)

  /**
   * A published post of the author's with two active subscribers of the test's own after
   * `afterId`; the post's deletion (its newsletter and ledger go with it) is `cleanUp`.
   */
  async function postWithSubscribers(): Promise<{ postId: number; afterId: number; cleanUp: () => Promise<void> }> {
    const token = author.tokens.access_token
    const res = await call('POST', '/posts', { title: `plan newsletter ${uniqueName('nl')}`, body: 'b' }, token)
    expect(res.status).toBe(201)
    const { id: postId } = (await res.json()) as { id: number }
    const row = await env.DB.prepare('SELECT coalesce(max(id), 0) AS id FROM subscribers').first<{ id: number }>()
    for (let i = 0; i < 2; i += 1) {
      const at = Date.now()
      await env.DB.prepare(
        `INSERT INTO subscribers (email, status, created_at, updated_at, confirmed_at, unsubscribe_token_hash)
         VALUES (?, 'active', ?, ?, ?, ?)`,
      )
        .bind(`${uniqueName('nl')}@example.com`, at, at, at, crypto.randomUUID())
        .run()
    }
    const cleanUp = () => expectStatus(call('DELETE', `/posts/${postId}`, undefined, token), 204)
    return { postId, afterId: row!.id, cleanUp }
  }

  /**
   * Creates a send for the post, scheduled (and then started) far ahead, so no cron of another
   * test finds it due or stalled; reschedules it, takes its snapshot (twice: a redelivered message
   * inserts nothing again) in batches of one, and closes the snapshot. The cron's queries run too.
   */
  async function startedSend(db: ReturnType<typeof createDb>, postId: number, afterId: number, now: Date) {
    const far = new Date(now.getTime() + 365 * DAY)
    const created = await insertNewsletter(
      db,
      { postId, scheduledFor: far, createdBy: author.user.id, apiOrigin: BASE_URL },
      now,
    )
    expect(await findNewsletterOfPost(db, postId)).toMatchObject({ id: created.id })
    await rescheduleNewsletter(db, postId, new Date(far.getTime() + 1000))
    await dueNewsletters(db, now)
    const started = await startNewsletter(
      db,
      created.id,
      'https://blog.example.com/{slug}',
      new Date(far.getTime() + 1000),
    )
    expect(started).toMatchObject({ status: 'sending' })
    const cursor = { id: created.id, snapshotAfterId: afterId }
    const chunk = await takeSnapshotChunk(db, cursor, 1, now)
    expect(chunk.batches.length).toBeGreaterThanOrEqual(2)
    await takeSnapshotChunk(db, cursor, 1, now)
    await advanceSnapshot(db, cursor, chunk, now)
    await stalledSends(db, now)
    const [first, second] = chunk.batches as [(typeof chunk.batches)[0], (typeof chunk.batches)[0]]
    return { id: created.id, first, second }
  }

  it('creates, starts, snapshots, claims, records, fails and cancels a send, and the cron finds due and stalled ones, through indexes', async () => {
    const rdb = createDb({ DB: recordingDb })
    const { postId, afterId, cleanUp } = await postWithSubscribers()
    const now = new Date()
    try {
      await expectIndexedPlans(
        async () => {
          const send = await startedSend(rdb, postId, afterId, now)
          const claimed = await claimBatches(rdb, send.id, [send.first], now)
          expect(claimed?.recipients.get(send.first)?.length).toBe(1)
          await recordBatches(rdb, send.id, [{ batchNo: send.first, outcome: { status: 'sent' } }], now)
          await claimBatches(rdb, send.id, [send.second], now)
          await failDeadLetteredBatch(rdb, send.id, send.second, 'dead-lettered', now)
          expect(await findNewsletter(rdb, send.id)).toMatchObject({ status: 'failed', sent: 1 })
          await cancelNewsletter(rdb, send.id, now)
          await countActiveSubscribers(rdb)
        },
        [
          /^insert into "newsletters"/,
          /from "newsletters" where "newsletters"\."post_id" = \?/,
          /from "newsletters" where "newsletters"\."id" = \?/,
          /^update "newsletters" set "scheduled_for" = \? where \("newsletters"\."post_id" = \?/,
          /^update "newsletters" set "status" = \?, "subject" = \(select "posts"\."title" from "posts" where "posts"\."id" = "newsletters"\."post_id"\)/,
          /from "subscribers" where \("subscribers"\."status" = \? and "subscribers"\."id" > \?\) order by "subscribers"\."id"/,
          /^insert into "newsletter_deliveries" .*select/,
          /^select max\("batch_no"\) from "newsletter_deliveries" where "newsletter_deliveries"\."newsletter_id" = \?/,
          /^update "newsletters" set "recipients" = \(select count\(\*\) from "newsletter_deliveries"/,
          /^update "newsletter_deliveries" set "status" = \?, "updated_at" = \?/,
          /^update "newsletters" set "skipped" = /,
          /^update "newsletter_deliveries" set "status" = \?, "error" = \?, "updated_at" = \?/,
          /^update "newsletters" set "sent" = /,
          /^update "newsletters" set "failed" = /,
          /^update "newsletters" set "status" = \?, "completed_at" = \?/,
          /from "newsletters" where \("newsletters"\."status" = \? and "newsletters"\."scheduled_for" <= \?\)/,
          /from "newsletters" where \("newsletters"\."status" = \? and \("newsletters"\."started_at" is null/,
          /^select count\(\*\) from "subscribers" where "subscribers"\."status" = \?/,
        ],
        batchSorts,
      )
    } finally {
      await cleanUp()
    }
  })

  // The batch index is (newsletter_id, batch_no, subscriber_id): a claim seeks its 100 rows in
  // order. Through the primary key it would read every ledger row of the send (N²/100 in all).
  it('reads and writes one batch of the ledger by seeking (newsletter_id, batch_no), never the whole send', async () => {
    const { postId, afterId, cleanUp } = await postWithSubscribers()
    const now = new Date()
    try {
      const send = await startedSend(createDb(env), postId, afterId, now)
      const rdb = createDb({ DB: recordingDb })
      const statements = await capture(async () => {
        // Two batches claimed together, as the NewsletterSender groups them, then recorded apart.
        await claimBatches(rdb, send.id, [send.first, send.second], now)
        await recordBatches(
          rdb,
          send.id,
          [
            { batchNo: send.first, outcome: { status: 'sent' } },
            { batchNo: send.second, outcome: { status: 'failed', error: 'refused' } },
          ],
          now,
        )
        await failDeadLetteredBatch(rdb, send.id, send.second, 'dead-lettered', now)
      })
      const onOneBatch = statements.filter((s) => /"newsletter_deliveries"\."batch_no" (= \?|in \()/.test(s.sql))
      expect(onOneBatch.length).toBeGreaterThanOrEqual(4)
      const report = await explainAll(onOneBatch, () => false)
      const walks = report.filter(
        (entry) =>
          !entry.plan.some((detail) =>
            /^SEARCH newsletter_deliveries USING .*\(newsletter_id=\? AND batch_no=\?/.test(detail),
          ),
      )
      expect(walks, JSON.stringify(walks, null, 2)).toEqual([])
    } finally {
      await cleanUp()
    }
  })

  it('counts the active subscribers (a dry run) on subscribers_status_id_idx', async () => {
    const statements = await capture(() => countActiveSubscribers(createDb({ DB: recordingDb })))
    expect(statements).toHaveLength(1)
    const plan = (await planOf(statements[0]!)).map((row) => row.detail)
    expect(plan).toEqual([
      expect.stringMatching(/^SEARCH subscribers USING COVERING INDEX subscribers_status_id_idx \(status=\?\)$/),
    ])
  })
})

describe('query plans: passkeys', () => {
  it('registers, lists, signs in with, renames and removes passkeys, and prunes challenges, through indexes', async () => {
    const { user, tokens } = await registerAndLogin()
    const authenticator = await SoftAuthenticator.create()
    const json = async <T>(res: Promise<Response>): Promise<T> => {
      const answer = await res
      expect(answer.status, await answer.clone().text()).toBeLessThan(300)
      return answer.json() as Promise<T>
    }
    type Started<O> = { challenge_id: string; options: O }
    await expectIndexedPlans(async () => {
      const registration = await json<Started<{ challenge: string; user: { id: string } }>>(
        call('POST', '/auth/passkeys/register/options', undefined, tokens.access_token),
      )
      const passkey = await json<{ id: number }>(
        call(
          'POST',
          '/auth/passkeys/register',
          { challenge_id: registration.challenge_id, response: await authenticator.register(registration.options) },
          tokens.access_token,
        ),
      )
      for (const body of [{}, { username: user.username }, { username: uniqueName('nobody') }]) {
        const signIn = await json<Started<{ challenge: string }>>(call('POST', '/auth/passkeys/login/options', body))
        if ('username' in body && body.username !== user.username) continue
        await expectStatus(
          call('POST', '/auth/passkeys/login', {
            challenge_id: signIn.challenge_id,
            response: await authenticator.assert(signIn.options),
          }),
          200,
        )
      }
      await expectStatus(call('GET', '/auth/passkeys', undefined, tokens.access_token), 200)
      await expectStatus(call('GET', '/users/me', undefined, tokens.access_token), 200)
      await expectStatus(call('PATCH', `/auth/passkeys/${passkey.id}`, { name: 'renamed' }, tokens.access_token), 200)
      await expectStatus(call('DELETE', `/auth/passkeys/${passkey.id}`, undefined, tokens.access_token), 204)
      await runScheduledMaintenance(recordingEnv, new Date())
    }, [
      /^insert into "passkey_challenges"/,
      /^delete from "passkey_challenges" where "passkey_challenges"."id" = \?/,
      /^delete from "passkey_challenges" where "passkey_challenges"."expires_at"/,
      /from "passkeys".*"passkeys"."credential_id" = \?/,
      /^update "passkeys"/,
      /^delete from "passkeys"/,
    ])
  })
})
