// Cookie mode in a real browser. The web app on http://localhost:<appPort> (in CORS_ORIGINS; the
// same site as the API on http://localhost:<apiPort>, another origin) logs in with
// POST /auth/token?mode=cookie and then works with credentials: 'include' alone; a page of another
// site (http://127.0.0.1:<otherPort>) in the same browser can neither read the API's answers nor
// forge a write with a classic form.
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { launchChromium, printServerLogOnFailure } from './chromium'

const apiUrl = inject('apiUrl')
printServerLogOnFailure(inject('wranglerLog'))
const appUrl = inject('appUrl')
const otherUrl = inject('otherUrl')

const ACCESS_COOKIE = '__Host-edgepress-access'
const REFRESH_COOKIE = '__Host-edgepress-refresh'
const CSRF_COOKIE = '__Host-edgepress-csrf'

/** What page.evaluate hands back from a fetch() run in the page. */
interface PageFetchResult {
  ok: boolean
  status: number
  type: string
  headers: Record<string, string>
  text: string
  error?: string
}

interface PageFetchInit {
  method?: string
  headers?: Record<string, string>
  body?: string
  mode?: 'cors' | 'no-cors'
}

/** fetch() from inside the page, with credentials: 'include' (the browser attaches its cookies). */
function pageFetch(page: Page, url: string, init: PageFetchInit = {}): Promise<PageFetchResult> {
  return page.evaluate(
    async ({ url, init }) => {
      try {
        const res = await fetch(url, { ...init, credentials: 'include' })
        const headers: Record<string, string> = {}
        res.headers.forEach((value, name) => {
          headers[name] = value
        })
        return { ok: res.ok, status: res.status, type: res.type, headers, text: await res.text() }
      } catch (err) {
        const error = err as Error
        return { ok: false, status: -1, type: 'error', headers: {}, text: '', error: `${error.name}: ${error.message}` }
      }
    },
    { url, init },
  )
}

function json(result: PageFetchResult): Record<string, unknown> {
  return JSON.parse(result.text) as Record<string, unknown>
}

interface SeenPreflight {
  url: string
  requestHeaders: Record<string, string>
  status?: number
  responseHeaders?: Record<string, string>
}

/** Chromium reports CORS preflights over CDP (Playwright's page events do not show them). */
async function watchPreflights(context: BrowserContext, page: Page): Promise<() => SeenPreflight[]> {
  const cdp = await context.newCDPSession(page)
  const seen = new Map<string, SeenPreflight>()
  cdp.on('Network.requestWillBeSent', (event) => {
    if (event.request.method === 'OPTIONS') {
      seen.set(event.requestId, { url: event.request.url, requestHeaders: lowerCased(event.request.headers) })
    }
  })
  cdp.on('Network.responseReceived', (event) => {
    const preflight = seen.get(event.requestId)
    if (preflight !== undefined) {
      preflight.status = event.response.status
      preflight.responseHeaders = lowerCased(event.response.headers)
    }
  })
  await cdp.send('Network.enable')
  return () => [...seen.values()]
}

function lowerCased(headers: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), String(value)]))
}

describe('cookie mode in chromium', () => {
  let browser: Browser
  let context: BrowserContext
  let app: Page
  let preflights: () => SeenPreflight[]
  const username = `browser-${Date.now().toString(36)}`
  const password = 'correct horse battery staple'
  let userId: number
  let csrfToken: string

  beforeAll(async () => {
    browser = await launchChromium()
    context = await browser.newContext()
    app = await context.newPage()
    preflights = await watchPreflights(context, app)
    const res = await app.goto(`${appUrl}/`)
    expect(res?.status()).toBe(200)
  })

  afterAll(async () => {
    await browser?.close()
  })

  it('registers and logs in with ?mode=cookie: a CSRF token in the body, the tokens only in cookies', async () => {
    const registered = await pageFetch(app, `${apiUrl}/api/v1/auth/register`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, email: `${username}@example.com`, password }),
    })
    expect(registered.error).toBeUndefined()
    expect(registered.status).toBe(201)
    userId = json(registered).id as number
    expect(typeof userId).toBe('number')

    const login = await pageFetch(app, `${apiUrl}/api/v1/auth/token?mode=cookie`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username, password }),
    })
    expect(login.status).toBe(200)
    // Readable at all only because the API allowed this origin with credentials (CORS).
    expect(login.type).toBe('cors')
    const body = json(login)
    expect(body.token_type).toBe('Cookie')
    expect(typeof body.csrf_token).toBe('string')
    expect(body).not.toHaveProperty('access_token')
    expect(body).not.toHaveProperty('refresh_token')
    csrfToken = body.csrf_token as string

    // The browser kept the cookies (Secure __Host- cookies are accepted on http://localhost).
    const cookies = new Map((await context.cookies(apiUrl)).map((cookie) => [cookie.name, cookie]))
    const access = cookies.get(ACCESS_COOKIE)
    const refresh = cookies.get(REFRESH_COOKIE)
    const csrf = cookies.get(CSRF_COOKIE)
    expect(access).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/', domain: 'localhost' })
    expect(refresh).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/' })
    expect(csrf).toMatchObject({ httpOnly: false, secure: true, sameSite: 'Strict', path: '/', value: csrfToken })
    expect(login.text).not.toContain(access?.value)
    expect(login.text).not.toContain(refresh?.value)
  })

  it("the app page's scripts cannot read the HttpOnly token cookies", async () => {
    const visible = await app.evaluate(() => document.cookie)
    expect(visible).not.toContain(ACCESS_COOKIE)
    expect(visible).not.toContain(REFRESH_COOKIE)
    // The CSRF cookie is readable by design; this page sees it only because cookies ignore ports
    // (app and API are both on host localhost here).
    expect(visible).toContain(`${CSRF_COOKIE}=${csrfToken}`)
    for (const cookie of await context.cookies(apiUrl)) {
      if (cookie.httpOnly) expect(visible).not.toContain(cookie.value)
    }
  })

  it('GET /users/me is authenticated by the cookie alone (no Authorization header)', async () => {
    const me = await pageFetch(app, `${apiUrl}/api/v1/users/me`)
    expect(me.status).toBe(200)
    expect(json(me)).toMatchObject({ id: userId, username })
  })

  it('a cookie-authenticated POST without X-CSRF-Token is refused with 403', async () => {
    const refused = await pageFetch(app, `${apiUrl}/api/v1/posts`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ title: 'no csrf token', body: 'must not be stored' }),
    })
    expect(refused.status).toBe(403)
    expect(json(refused)).toMatchObject({ status: 403, code: 'forbidden' })
  })

  it('with X-CSRF-Token the POST is created (201), after a preflight the API allowed', async () => {
    const created = await pageFetch(app, `${apiUrl}/api/v1/posts`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrfToken },
      body: JSON.stringify({ title: 'Hello from chromium', body: 'cookie mode + CSRF token' }),
    })
    expect(created.status).toBe(201)
    expect(json(created)).toMatchObject({ title: 'Hello from chromium', author: { id: userId, username } })
    expect(created.headers.location).toMatch(/\/api\/v1\/posts\/\d+$/)

    // The browser would not have sent these POSTs had their preflight failed; CDP shows it. The
    // answer is cached (Access-Control-Max-Age), so the POST without the token above may have
    // been the one that asked: the allowed headers must cover X-CSRF-Token as well.
    const answered = (): SeenPreflight[] =>
      preflights().filter((p) => p.url === `${apiUrl}/api/v1/posts` && p.status !== undefined)
    await expect.poll(() => answered().length).toBeGreaterThan(0)
    for (const preflight of answered()) {
      expect(preflight.requestHeaders.origin).toBe(appUrl)
      expect(preflight.requestHeaders['access-control-request-method']).toBe('POST')
      expect(preflight.requestHeaders['access-control-request-headers']).toMatch(/content-type/i)
      expect(preflight.status).toBe(204)
      expect(preflight.responseHeaders?.['access-control-allow-origin']).toBe(appUrl)
      expect(preflight.responseHeaders?.['access-control-allow-credentials']).toBe('true')
      expect(preflight.responseHeaders?.['access-control-allow-methods']).toMatch(/\bPOST\b/)
      expect(preflight.responseHeaders?.['access-control-allow-headers']).toMatch(/\bX-CSRF-Token\b/i)
      expect(preflight.responseHeaders?.['access-control-allow-headers']).toMatch(/\bContent-Type\b/i)
    }
  })

  describe('a page of another site in the same browser', () => {
    let other: Page

    beforeAll(async () => {
      other = await context.newPage()
      const res = await other.goto(`${otherUrl}/`)
      expect(res?.status()).toBe(200)
    })

    it('cannot read /users/me with the cookies: CORS withholds the response', async () => {
      const cors = await pageFetch(other, `${apiUrl}/api/v1/users/me`)
      expect(cors.error).toMatch(/^TypeError/)
      expect(cors.text).toBe('')

      const opaque = await pageFetch(other, `${apiUrl}/api/v1/users/me`, { mode: 'no-cors' })
      expect(opaque).toMatchObject({ type: 'opaque', status: 0, text: '', headers: {} })
      expect(opaque.error).toBeUndefined()
    })

    it('cannot create a post with a classic cross-site HTML form', async () => {
      const postsOf = async (): Promise<unknown[]> => {
        const list = await pageFetch(app, `${apiUrl}/api/v1/users/${userId}/posts`)
        expect(list.status).toBe(200)
        return json(list).results as unknown[]
      }
      const before = await postsOf()
      expect(before).toHaveLength(1)

      await other.goto(`${otherUrl}/form`)
      const [answer] = await Promise.all([
        other.waitForResponse((res) => res.url() === `${apiUrl}/api/v1/posts` && res.request().method() === 'POST'),
        other.locator('#forged button').click(),
      ])
      expect(answer.status()).toBeGreaterThanOrEqual(400)
      expect(answer.status()).toBeLessThan(500)
      // SameSite=Strict: the browser did not even attach the session cookies to the forged POST.
      const sent = await answer.request().allHeaders()
      expect(sent.cookie ?? '').not.toContain(ACCESS_COOKIE)
      expect(sent.origin).toBe(otherUrl)

      expect(await postsOf()).toEqual(before)
    })
  })
})
