import { env } from 'cloudflare:workers'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { expectProblem, fetchWorker, mintToken, registerUser, uniqueName } from '../../test/helpers'

// The mechanism is the one production runs: real Workers Rate Limiting bindings, the same keys and
// the same 429. Only the numbers are small: this file routes the three limiters to bindings that
// vitest.config.ts declares with limits of a few requests (the suite's other files keep larger
// ones), so each burst is a handful of requests and finishes far inside one 60 s window.
const PER_IP = 4
const PER_ACCOUNT = 3
const WRITES_PER_USER = 4
const WINDOW_MS = 60_000

const limitedEnv = {
  ...env,
  CREDENTIALS_BY_IP: env.SMALL_CREDENTIALS_BY_IP,
  CREDENTIALS_BY_ACCOUNT: env.SMALL_CREDENTIALS_BY_ACCOUNT,
  WRITES_BY_USER: env.SMALL_WRITES_BY_USER,
}

/** api() against the worker with the small limiters. */
function api(
  method: string,
  path: string,
  body?: unknown,
  token?: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  const allHeaders: Record<string, string> = { ...headers }
  if (body !== undefined) allHeaders['content-type'] = 'application/json'
  if (token !== undefined) allHeaders.authorization = `Bearer ${token}`
  const init = { method, headers: allHeaders, body: body === undefined ? undefined : JSON.stringify(body) }
  return fetchWorker(`https://edgepress.test/api/v1${path}`, init, limitedEnv)
}

let ipCounter = 0

/** A client IP (documentation ranges, RFC 5737) no other test of this file uses. */
function uniqueIp(): string {
  ipCounter += 1
  const range = ipCounter % 2 === 0 ? '203.0.113' : '198.51.100'
  return `${range}.${ipCounter}`
}

function from(ip: string): Record<string, string> {
  return { 'cf-connecting-ip': ip }
}

/** Spells `text` with alternating letter case, e.g. `uSeR_1`. */
function mixedCase(text: string, variant: number): string {
  return [...text].map((char, i) => ((i + variant) % 2 === 0 ? char.toUpperCase() : char.toLowerCase())).join('')
}

/**
 * Runs `burst` until one run falls inside a single rate-limit window, and returns that run. The
 * local limiter counts in fixed windows aligned to the epoch and forgets every count when a window
 * ends (miniflare's ratelimit worker: `Math.floor(Date.now() / (period * 1e3))`, then
 * `buckets.clear()`), so a run that straddles a boundary proves nothing either way: it is discarded
 * and run again with fresh keys, which `burst` creates itself. Nothing here depends on how fast the
 * machine is; a run is a few requests, and the next one starts inside a fresh window.
 */
async function inOneWindow<T>(burst: () => Promise<T>): Promise<T> {
  for (;;) {
    const window = Math.floor(Date.now() / WINDOW_MS)
    const result = await burst()
    if (Math.floor(Date.now() / WINDOW_MS) === window) return result
  }
}

async function expectRateLimited(res: Response): Promise<void> {
  expect(res.headers.get('retry-after')).toBe('60')
  await expectProblem(res, 429, 'rate_limited')
}

/** Statuses of `count` requests, one after the other. */
async function statusesOf(count: number, request: (i: number) => Promise<Response>): Promise<number[]> {
  const statuses: number[] = []
  for (let i = 0; i < count; i += 1) {
    const res = await request(i)
    await res.body?.cancel()
    statuses.push(res.status)
  }
  return statuses
}

// The console mail transport prints every email these bursts send (verification, reset,
// subscription confirmation); nothing here reads the log.
beforeEach(() => {
  vi.spyOn(console, 'log').mockImplementation(() => undefined)
})

afterEach(() => {
  vi.restoreAllMocks()
})

describe('per account: POST /api/v1/auth/token', () => {
  it(`refuses the ${PER_ACCOUNT + 1}st attempt for one username, whatever its case, even with the right password`, async () => {
    const { user, other, failures, blocked, otherLogin } = await inOneWindow(async () => {
      const user = await registerUser()
      const other = await registerUser()
      const failures = await statusesOf(PER_ACCOUNT, (i) =>
        api('POST', '/auth/token', { username: mixedCase(user.username, i), password: `wrong password ${i}` }),
      )
      const blocked = await api('POST', '/auth/token', { username: user.username, password: user.password })
      const otherLogin = await api('POST', '/auth/token', { username: other.username, password: other.password })
      return { user, other, failures, blocked, otherLogin }
    })

    expect(failures).toEqual(Array(PER_ACCOUNT).fill(401))
    await expectRateLimited(blocked)
    expect(otherLogin.status).toBe(200)
    expect(user.username).not.toBe(other.username)
  })

  it('counts /auth/login, the alias, against the same account', async () => {
    const { failures, blocked } = await inOneWindow(async () => {
      const user = await registerUser()
      const failures = await statusesOf(PER_ACCOUNT, (i) =>
        api('POST', i % 2 === 0 ? '/auth/token' : '/auth/login', {
          username: user.username,
          password: 'wrong password',
        }),
      )
      const blocked = await api('POST', '/auth/login', { username: user.username, password: user.password })
      return { failures, blocked }
    })

    expect(failures).toEqual(Array(PER_ACCOUNT).fill(401))
    await expectRateLimited(blocked)
  })
})

describe('per account: one budget whatever the spelling of the login', () => {
  it('counts attempts by username, by email and by another Unicode form of the name against one account', async () => {
    const { failures, blocked } = await inOneWindow(async () => {
      // "é" precomposed (NFC) at registration; tried below also decomposed (NFD) and by email.
      const plain = uniqueName('nfc')
      const user = await registerUser({ username: `jos\u00e9_${plain}`, email: `${plain}@example.com` })
      const spellings = [user.username, user.email.toUpperCase(), user.username.normalize('NFD')]
      const failures = await statusesOf(PER_ACCOUNT, (i) =>
        api('POST', '/auth/token', { username: spellings[i % spellings.length], password: 'wrong password' }),
      )
      const blocked = await api('POST', '/auth/token', {
        username: user.username.normalize('NFD'),
        password: user.password,
      })
      return { failures, blocked }
    })

    expect(failures).toEqual(Array(PER_ACCOUNT).fill(401))
    await expectRateLimited(blocked)
  })
})

describe('per account: the keys of different kinds never collide', () => {
  it('attempts for the login name "user:<id>" do not spend the budget of user <id>', async () => {
    const { failures, realLogin } = await inOneWindow(async () => {
      const user = await registerUser()
      const failures = await statusesOf(PER_ACCOUNT + 1, () =>
        api('POST', '/auth/token', { username: `user:${user.id}`, password: 'a guess' }),
      )
      const realLogin = await api('POST', '/auth/token', { username: user.username, password: user.password })
      return { failures, realLogin }
    })

    // The made-up name has a budget of its own, which it used up …
    expect(failures.slice(0, PER_ACCOUNT)).toEqual(Array(PER_ACCOUNT).fill(401))
    expect(failures[PER_ACCOUNT]).toBe(429)
    // … and the account it looks like is not locked out.
    expect(realLogin.status).toBe(200)
  })
})

describe('per client IP (CF-Connecting-IP)', () => {
  it(`POST /auth/token (and /auth/login): the ${PER_IP + 1}st attempt from one IP → 429; another IP is unaffected`, async () => {
    const { attempts, blocked, otherIp } = await inOneWindow(async () => {
      const ip = uniqueIp()
      const prefix = uniqueName('nobody')
      const attempts = await statusesOf(PER_IP, (i) =>
        api(
          'POST',
          i % 2 === 0 ? '/auth/token' : '/auth/login',
          { username: `${prefix}_${i}`, password: 'wrong password' },
          undefined,
          from(ip),
        ),
      )
      const blocked = await api(
        'POST',
        '/auth/token',
        { username: `${prefix}_last`, password: 'wrong password' },
        undefined,
        from(ip),
      )
      const otherIp = await api(
        'POST',
        '/auth/token',
        { username: `${prefix}_other`, password: 'wrong password' },
        undefined,
        from(uniqueIp()),
      )
      return { attempts, blocked, otherIp }
    })

    expect(attempts).toEqual(Array(PER_IP).fill(401))
    await expectRateLimited(blocked)
    await expectProblem(otherIp, 401, 'invalid_credentials')
  })

  it(`POST /auth/passkeys/login/options and /login: the ${PER_IP + 1}st attempt from one IP → 429 before any check`, async () => {
    const assertion = {
      challenge_id: 'made-up',
      response: {
        id: 'AAAA',
        rawId: 'AAAA',
        type: 'public-key',
        response: { clientDataJSON: 'AAAA', authenticatorData: 'AAAA', signature: 'AAAA' },
      },
    }
    const result = await inOneWindow(async () => {
      const ip = uniqueIp()
      const options = await statusesOf(PER_IP, () =>
        api('POST', '/auth/passkeys/login/options', {}, undefined, from(ip)),
      )
      const optionsBlocked = await api('POST', '/auth/passkeys/login/options', {}, undefined, from(ip))
      // Its own bucket: the options spent nothing of it.
      const logins = await statusesOf(PER_IP, () => api('POST', '/auth/passkeys/login', assertion, undefined, from(ip)))
      const loginBlocked = await api('POST', '/auth/passkeys/login', assertion, undefined, from(ip))
      const otherIp = await api('POST', '/auth/passkeys/login', assertion, undefined, from(uniqueIp()))
      return { options, optionsBlocked, logins, loginBlocked, otherIp }
    })
    expect(result.options).toEqual(Array(PER_IP).fill(200))
    await expectRateLimited(result.optionsBlocked)
    expect(result.logins).toEqual(Array(PER_IP).fill(401))
    await expectRateLimited(result.loginBlocked)
    await expectProblem(result.otherIp, 401, 'invalid_credentials')
  })

  it(`POST /auth/passkeys/login/options {username}: the ${PER_ACCOUNT + 1}st for one name → 429`, async () => {
    const result = await inOneWindow(async () => {
      const username = uniqueName('passkey')
      const asked = await statusesOf(PER_ACCOUNT, (i) =>
        api('POST', '/auth/passkeys/login/options', { username: mixedCase(username, i) }, undefined, from(uniqueIp())),
      )
      const blocked = await api('POST', '/auth/passkeys/login/options', { username }, undefined, from(uniqueIp()))
      return { asked, blocked }
    })
    expect(result.asked).toEqual(Array(PER_ACCOUNT).fill(200))
    await expectRateLimited(result.blocked)
  })

  it(`POST /auth/register: the ${PER_IP + 1}st registration from one IP → 429; another IP is unaffected`, async () => {
    const { created, blocked, otherIp } = await inOneWindow(async () => {
      const ip = uniqueIp()
      const registration = () => {
        const username = uniqueName('ip_reg')
        return { username, email: `${username}@example.com`, password: 'correct horse battery staple' }
      }
      const created = await statusesOf(PER_IP, () => api('POST', '/auth/register', registration(), undefined, from(ip)))
      const blocked = await api('POST', '/auth/register', registration(), undefined, from(ip))
      const otherIp = await api('POST', '/auth/register', registration(), undefined, from(uniqueIp()))
      return { created, blocked, otherIp }
    })

    expect(created).toEqual(Array(PER_IP).fill(201))
    await expectRateLimited(blocked)
    expect(otherIp.status).toBe(201)
  })

  it(`POST /auth/password/reset: the ${PER_IP + 1}st request from one IP → 429; another IP is unaffected`, async () => {
    const { accepted, blocked, otherIp } = await inOneWindow(async () => {
      const ip = uniqueIp()
      const prefix = uniqueName('ip_reset')
      const accepted = await statusesOf(PER_IP, (i) =>
        api('POST', '/auth/password/reset', { email: `${prefix}_${i}@example.com` }, undefined, from(ip)),
      )
      const blocked = await api(
        'POST',
        '/auth/password/reset',
        { email: `${prefix}_last@example.com` },
        undefined,
        from(ip),
      )
      const otherIp = await api(
        'POST',
        '/auth/password/reset',
        { email: `${prefix}_other@example.com` },
        undefined,
        from(uniqueIp()),
      )
      return { accepted, blocked, otherIp }
    })

    expect(accepted).toEqual(Array(PER_IP).fill(202))
    await expectRateLimited(blocked)
    expect(otherIp.status).toBe(202)
  })

  it(`POST /auth/password/reset/confirm: the ${PER_IP + 1}st attempt from one IP → 429; another IP is unaffected`, async () => {
    const { refused, blocked, otherIp } = await inOneWindow(async () => {
      const ip = uniqueIp()
      const refused = await statusesOf(PER_IP, (i) =>
        api(
          'POST',
          '/auth/password/reset/confirm',
          { token: `guess-${i}`, new_password: 'a new password' },
          undefined,
          from(ip),
        ),
      )
      const blocked = await api(
        'POST',
        '/auth/password/reset/confirm',
        { token: 'guess', new_password: 'a new password' },
        undefined,
        from(ip),
      )
      const otherIp = await api(
        'POST',
        '/auth/password/reset/confirm',
        { token: 'guess', new_password: 'a new password' },
        undefined,
        from(uniqueIp()),
      )
      return { refused, blocked, otherIp }
    })

    expect(refused).toEqual(Array(PER_IP).fill(400))
    await expectRateLimited(blocked)
    expect(otherIp.status).toBe(400)
  })

  it(`POST /subscribers: the ${PER_IP + 1}st subscription from one IP → 429; another IP is unaffected`, async () => {
    const { accepted, blocked, otherIp } = await inOneWindow(async () => {
      const ip = uniqueIp()
      const prefix = uniqueName('ip_sub')
      const accepted = await statusesOf(PER_IP, (i) =>
        api('POST', '/subscribers', { email: `${prefix}_${i}@example.com` }, undefined, from(ip)),
      )
      const blocked = await api('POST', '/subscribers', { email: `${prefix}_last@example.com` }, undefined, from(ip))
      const otherIp = await api(
        'POST',
        '/subscribers',
        { email: `${prefix}_other@example.com` },
        undefined,
        from(uniqueIp()),
      )
      return { accepted, blocked, otherIp }
    })

    expect(accepted).toEqual(Array(PER_IP).fill(202))
    await expectRateLimited(blocked)
    expect(otherIp.status).toBe(202)
  })

  it('counts each endpoint separately for one IP', async () => {
    const { logins, reset } = await inOneWindow(async () => {
      const ip = uniqueIp()
      const prefix = uniqueName('ip_split')
      const logins = await statusesOf(PER_IP + 1, (i) =>
        api('POST', '/auth/token', { username: `${prefix}_${i}`, password: 'wrong password' }, undefined, from(ip)),
      )
      const reset = await api('POST', '/auth/password/reset', { email: `${prefix}@example.com` }, undefined, from(ip))
      return { logins, reset }
    })

    expect(logins.at(-1)).toBe(429)
    expect(reset.status).toBe(202)
  })
})

describe('per account (email) on the other credential endpoints', () => {
  it(`POST /auth/register: the ${PER_ACCOUNT + 1}st attempt for one email → 429`, async () => {
    const { statuses, blocked, otherEmail } = await inOneWindow(async () => {
      const email = `${uniqueName('acct_reg')}@example.com`
      const statuses = await statusesOf(PER_ACCOUNT, (i) =>
        api('POST', '/auth/register', {
          username: uniqueName('acct_reg'),
          email: mixedCase(email, i),
          password: 'correct horse battery staple',
        }),
      )
      const blocked = await api('POST', '/auth/register', {
        username: uniqueName('acct_reg'),
        email,
        password: 'correct horse battery staple',
      })
      const username = uniqueName('acct_reg')
      const otherEmail = await api('POST', '/auth/register', {
        username,
        email: `${username}@example.com`,
        password: 'correct horse battery staple',
      })
      return { statuses, blocked, otherEmail }
    })

    // The first registers the address; the others find it taken.
    expect(statuses).toEqual([201, ...Array(PER_ACCOUNT - 1).fill(409)])
    await expectRateLimited(blocked)
    expect(otherEmail.status).toBe(201)
  })

  it(`POST /auth/password/reset: the ${PER_ACCOUNT + 1}st request for one email → 429, whatever its case`, async () => {
    const { accepted, blocked, otherEmail } = await inOneWindow(async () => {
      const user = await registerUser()
      const other = await registerUser()
      const accepted = await statusesOf(PER_ACCOUNT, (i) =>
        api('POST', '/auth/password/reset', { email: mixedCase(user.email, i) }),
      )
      const blocked = await api('POST', '/auth/password/reset', { email: user.email })
      const otherEmail = await api('POST', '/auth/password/reset', { email: other.email })
      return { accepted, blocked, otherEmail }
    })

    expect(accepted).toEqual(Array(PER_ACCOUNT).fill(202))
    await expectRateLimited(blocked)
    expect(otherEmail.status).toBe(202)
  })

  it(`POST /subscribers: the ${PER_ACCOUNT + 1}st subscription of one email → 429, whatever its case`, async () => {
    const { accepted, blocked, otherEmail } = await inOneWindow(async () => {
      const email = `${uniqueName('acct_sub')}@example.com`
      const accepted = await statusesOf(PER_ACCOUNT, (i) => api('POST', '/subscribers', { email: mixedCase(email, i) }))
      const blocked = await api('POST', '/subscribers', { email })
      const otherEmail = await api('POST', '/subscribers', { email: `${uniqueName('acct_sub')}@example.com` })
      return { accepted, blocked, otherEmail }
    })

    expect(accepted).toEqual(Array(PER_ACCOUNT).fill(202))
    await expectRateLimited(blocked)
    expect(otherEmail.status).toBe(202)
  })
})

describe('per user: authenticated writes', () => {
  it(`refuses the ${WRITES_PER_USER + 1}st write of one user; reads stay open and other users can still write`, async () => {
    const result = await inOneWindow(async () => {
      const user = await registerUser()
      const other = await registerUser()
      // Minted tokens: no login, so no credential limit is involved.
      const token = await mintToken({ sub: String(user.id) })
      const otherToken = await mintToken({ sub: String(other.id) })
      const created = await statusesOf(WRITES_PER_USER, (i) =>
        api('POST', '/posts', { title: `post ${i}`, body: 'rate limit test' }, token),
      )
      const blocked = await api('POST', '/posts', { title: 'one too many', body: 'rate limit test' }, token)
      const blockedPatch = await api('PATCH', '/users/me', { username: uniqueName('renamed') }, token)
      const reads = await Promise.all([
        api('GET', `/posts?author=${user.id}&limit=100`, undefined, token),
        api('GET', '/users/me', undefined, token),
        api('GET', `/users/${user.id}/posts`, undefined, token),
      ])
      const otherWrite = await api('POST', '/posts', { title: 'still allowed', body: 'rate limit test' }, otherToken)
      return { user, created, blocked, blockedPatch, reads, otherWrite }
    })

    expect(result.created).toEqual(Array(WRITES_PER_USER).fill(201))
    await expectRateLimited(result.blocked)
    await expectRateLimited(result.blockedPatch)
    expect(result.reads.map((res) => res.status)).toEqual([200, 200, 200])
    const page = (await result.reads[0]!.json()) as { results: { author: { id: number } }[] }
    expect(page.results).toHaveLength(WRITES_PER_USER)
    expect(page.results.every((post) => post.author.id === result.user.id)).toBe(true)
    expect(result.otherWrite.status).toBe(201)
  })
})

describe('per user: only a live token spends the write budget', () => {
  it('writes with a logged-out token are refused without charging the owner: the owner can still write', async () => {
    const result = await inOneWindow(async () => {
      const user = await registerUser()
      const loggedOut = await mintToken({ sub: String(user.id) })
      expect((await api('POST', '/auth/logout', undefined, loggedOut)).status).toBe(204)
      const refused = await statusesOf(WRITES_PER_USER + 1, (i) =>
        api('POST', '/posts', { title: `stolen ${i}`, body: 'never stored' }, loggedOut),
      )
      const owner = await mintToken({ sub: String(user.id) })
      const ownerWrite = await api('POST', '/posts', { title: 'mine', body: 'still allowed' }, owner)
      return { refused, ownerWrite }
    })

    expect(result.refused).toEqual(Array(WRITES_PER_USER + 1).fill(401))
    expect(result.ownerWrite.status).toBe(201)
  })
})

describe('GET /openapi.json', () => {
  it('documents 429 rate_limited for every rate-limited operation', async () => {
    const res = await fetchWorker('https://edgepress.test/openapi.json')
    expect(res.status).toBe(200)
    const document = (await res.json()) as {
      paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>>
    }
    const limited: [string, string][] = [
      ['post', '/api/v1/auth/token'],
      ['post', '/api/v1/auth/login'],
      ['post', '/api/v1/auth/register'],
      ['post', '/api/v1/auth/passkeys/login/options'],
      ['post', '/api/v1/auth/passkeys/login'],
      ['post', '/api/v1/auth/password/reset'],
      ['post', '/api/v1/subscribers'],
      ['post', '/api/v1/posts'],
      ['put', '/api/v1/posts/{id}'],
      ['patch', '/api/v1/posts/{id}'],
      ['delete', '/api/v1/posts/{id}'],
      ['patch', '/api/v1/users/me'],
    ]
    for (const [method, path] of limited) {
      const response = document.paths[path]?.[method]?.responses['429']
      expect(response, `${method} ${path}`).toBeDefined()
      expect(response?.content?.['application/problem+json'], `${method} ${path}`).toBeDefined()
    }
  })
})
