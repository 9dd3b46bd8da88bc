// @edgepress/client in cookie mode, in a real browser: the web app on http://localhost:<appPort>
// (the same site as the API, in CORS_ORIGINS) loads the SDK, signs in with mode 'cookies', and
// then holds no token at all: the browser keeps them in HttpOnly cookies, and the SDK sends the
// CSRF token on writes by itself.
import { join } from 'node:path'
import { build } from 'esbuild'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { launchChromium, printServerLogOnFailure } from './chromium'

const apiUrl = inject('apiUrl')
printServerLogOnFailure(inject('wranglerLog'))
const appUrl = inject('appUrl')

/** The SDK as a browser script: `window.EdgepressClient`. */
async function sdkScript(): Promise<string> {
  const bundled = await build({
    entryPoints: [join(import.meta.dirname, '..', '..', 'client', 'src', 'index.ts')],
    bundle: true,
    format: 'iife',
    globalName: 'EdgepressClient',
    write: false,
  })
  return bundled.outputFiles[0]!.text
}

interface Walk {
  registered: number | undefined
  signIn: unknown
  session: { csrfToken?: string; accessToken?: string; refreshToken?: string } | null
  me: { status: number | undefined; username?: string }
  created: { status: number | undefined; csrfSent: boolean }
  storedInPage: string
  afterSignOut: { status: number | undefined; code?: string }
}

describe('@edgepress/client, cookie mode, in chromium', () => {
  let browser: Browser
  let app: Page

  beforeAll(async () => {
    browser = await launchChromium()
    const context = await browser.newContext()
    app = await context.newPage()
    expect((await app.goto(`${appUrl}/`))?.status()).toBe(200)
    await app.addScriptTag({ content: await sdkScript() })
  })

  afterAll(async () => {
    await browser?.close()
  })

  it('signs in, reads, writes with the CSRF header it adds itself, and signs out, holding no token', async () => {
    const username = `sdk-${Date.now().toString(36)}`
    const walk = await app.evaluate(
      async ({ apiUrl, username }): Promise<Walk> => {
        const sdk = (window as unknown as { EdgepressClient: typeof import('../../client/src/index') }).EdgepressClient
        const seen: Headers[] = []
        const client = sdk.createClient({
          baseUrl: apiUrl,
          mode: 'cookies',
          fetch: (request) => {
            seen.push(new Headers(request.headers))
            return fetch(request)
          },
        })
        const password = 'correct horse battery staple'
        const registered = await client.POST('/api/v1/auth/register', {
          body: { username, email: `${username}@example.com`, password },
        })
        const signIn = await client.signIn({ username, password })
        const session = await client.session()
        const me = await client.GET('/api/v1/users/me')
        const created = await client.POST('/api/v1/posts', { body: { title: 'From the browser SDK', body: 'cookies' } })
        const csrfSent = seen.at(-1)?.get('x-csrf-token') === session?.csrfToken
        await client.signOut()
        const after = await client.GET('/api/v1/users/me')
        return {
          registered: registered.response?.status,
          signIn: signIn.data,
          session,
          me: { status: me.response?.status, username: me.data?.username },
          created: { status: created.response?.status, csrfSent },
          storedInPage: JSON.stringify(Object.keys(localStorage)),
          afterSignOut: { status: after.response?.status, code: after.error?.code },
        }
      },
      { apiUrl, username },
    )
    expect(walk.registered).toBe(201)
    expect(walk.signIn).toEqual({ status: 'signed_in' })
    expect(walk.session?.csrfToken).toEqual(expect.any(String))
    expect(walk.session?.accessToken).toBeUndefined()
    expect(walk.session?.refreshToken).toBeUndefined()
    expect(walk.me).toEqual({ status: 200, username })
    expect(walk.created).toEqual({ status: 201, csrfSent: true })
    expect(walk.storedInPage).toBe('[]')
    expect(walk.afterSignOut.status).toBe(401)
  })
})
