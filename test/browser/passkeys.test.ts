// Passkeys (WebAuthn) in a real browser: the web app on http://localhost:<appPort> (in
// WEBAUTHN_ORIGINS, see global-setup.ts; the RP id is localhost, PUBLIC_BASE_URL's host) registers
// a passkey with navigator.credentials.create() and signs in with it, usernameless, with
// navigator.credentials.get(). Chromium's virtual authenticator (over CDP) stands in for the
// device: a platform authenticator with resident keys and user verification, the user always
// present and verified, so no prompt ever waits for a human.
import type { Browser, CDPSession, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { launchChromium, printServerLogOnFailure } from './chromium'

const apiUrl = inject('apiUrl')
const appUrl = inject('appUrl')
printServerLogOnFailure(inject('wranglerLog'))

/** How long one fetch() or one WebAuthn ceremony in the page may take before it is aborted. */
const STEP_TIMEOUT_MS = 15_000

interface PageFetchResult {
  status: number
  body: Record<string, unknown> | null
  error?: string
}

/** A JSON request from inside the app's page (CORS, no cookies), with a Bearer token if given. */
function pageJson(
  page: Page,
  url: string,
  init: { method?: string; token?: string; body?: unknown } = {},
): Promise<PageFetchResult> {
  return page.evaluate(
    async ({ url, init, timeoutMs }) => {
      const headers: Record<string, string> = {}
      if (init.body !== undefined) headers['Content-Type'] = 'application/json'
      if (init.token !== undefined) headers.Authorization = `Bearer ${init.token}`
      try {
        const res = await fetch(url, {
          method: init.method ?? 'GET',
          headers,
          body: init.body === undefined ? undefined : JSON.stringify(init.body),
          credentials: 'omit',
          signal: AbortSignal.timeout(timeoutMs),
        })
        const text = await res.text()
        return { status: res.status, body: text === '' ? null : (JSON.parse(text) as Record<string, unknown>) }
      } catch (err) {
        const error = err as Error
        return { status: -1, body: null, error: `${error.name}: ${error.message}` }
      }
    },
    { url, init, timeoutMs: STEP_TIMEOUT_MS },
  )
}

/** What a ceremony in the page hands back: the credential's toJSON(), or the error it threw. */
interface CeremonyResult {
  credential?: {
    id: string
    rawId: string
    type: string
    authenticatorAttachment?: string | null
    response: Record<string, unknown>
    clientExtensionResults?: Record<string, unknown>
  }
  error?: string
}

/**
 * navigator.credentials.create() with the API's creation options, or get() with its request
 * options (WebAuthn's JSON forms), in the page; the credential as toJSON() gives it.
 */
function ceremony(page: Page, kind: 'create' | 'get', options: unknown): Promise<CeremonyResult> {
  return page.evaluate(
    async ({ kind, options, timeoutMs }) => {
      try {
        const signal = AbortSignal.timeout(timeoutMs)
        const credential =
          kind === 'create'
            ? await navigator.credentials.create({
                publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(
                  options as PublicKeyCredentialCreationOptionsJSON,
                ),
                signal,
              })
            : await navigator.credentials.get({
                publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(
                  options as PublicKeyCredentialRequestOptionsJSON,
                ),
                signal,
              })
        if (!(credential instanceof PublicKeyCredential)) return { error: `not a PublicKeyCredential: ${credential}` }
        return { credential: credential.toJSON() }
      } catch (err) {
        const error = err as Error
        return { error: `${error.name}: ${error.message}` }
      }
    },
    { kind, options, timeoutMs: STEP_TIMEOUT_MS },
  )
}

/** CDP reports binary fields in standard base64; WebAuthn's JSON uses unpadded base64url. */
function base64ToBase64Url(base64: string): string {
  return base64.replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '')
}

describe('passkeys in chromium', () => {
  let browser: Browser
  let app: Page
  let cdp: CDPSession
  let authenticatorId: string | undefined
  const username = `passkey-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
  const password = 'correct horse battery staple'
  let userId: number
  let userHandle: string
  let credentialId: string

  beforeAll(async () => {
    browser = await launchChromium()
    const context = await browser.newContext()
    app = await context.newPage()
    expect((await app.goto(`${appUrl}/`))?.status()).toBe(200)
    cdp = await context.newCDPSession(app)
    await cdp.send('WebAuthn.enable', { enableUI: false })
    const added = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2',
        transport: 'internal',
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    })
    authenticatorId = added.authenticatorId
  })

  afterAll(async () => {
    try {
      if (authenticatorId !== undefined) {
        await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId })
        await cdp.send('WebAuthn.disable')
        await cdp.detach()
      }
    } finally {
      await browser?.close()
    }
  })

  it('the page has the JSON helpers of WebAuthn Level 3 (parse…FromJSON, toJSON)', async () => {
    const support = await app.evaluate(() => ({
      secureContext: window.isSecureContext,
      parseCreation: typeof PublicKeyCredential.parseCreationOptionsFromJSON,
      parseRequest: typeof PublicKeyCredential.parseRequestOptionsFromJSON,
      toJSON: typeof PublicKeyCredential.prototype.toJSON,
    }))
    expect(support).toEqual({
      secureContext: true,
      parseCreation: 'function',
      parseRequest: 'function',
      toJSON: 'function',
    })
  })

  it('registers a passkey on the app page: 201 with its view, one resident credential in the authenticator', async () => {
    const registered = await pageJson(app, `${apiUrl}/api/v1/auth/register`, {
      method: 'POST',
      body: { username, email: `${username}@example.com`, password },
    })
    expect(registered).toMatchObject({ status: 201 })
    userId = registered.body?.id as number
    expect(userId).toEqual(expect.any(Number))

    const token = await pageJson(app, `${apiUrl}/api/v1/auth/token`, { method: 'POST', body: { username, password } })
    expect(token.status).toBe(200)
    const accessToken = token.body?.access_token as string
    expect(accessToken).toEqual(expect.any(String))

    const options = await pageJson(app, `${apiUrl}/api/v1/auth/passkeys/register/options`, {
      method: 'POST',
      token: accessToken,
    })
    expect(options.status).toBe(200)
    const creation = options.body?.options as {
      rp: { id: string }
      user: { id: string; name: string }
      excludeCredentials: unknown[]
    }
    expect(creation).toMatchObject({ rp: { id: 'localhost' }, user: { name: username }, excludeCredentials: [] })
    userHandle = creation.user.id

    const created = await ceremony(app, 'create', creation)
    expect(created.error).toBeUndefined()
    const credential = created.credential!
    expect(credential).toMatchObject({ type: 'public-key', authenticatorAttachment: 'platform' })
    expect(credential.id).toBe(credential.rawId)
    credentialId = credential.id

    const saved = await pageJson(app, `${apiUrl}/api/v1/auth/passkeys/register`, {
      method: 'POST',
      token: accessToken,
      body: { challenge_id: options.body?.challenge_id, response: credential },
    })
    expect(saved.error).toBeUndefined()
    expect(saved.status).toBe(201)
    expect(saved.body).toEqual({
      id: expect.any(Number),
      name: expect.stringMatching(/^Passkey on ./),
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      last_used_at: null,
      backed_up: false,
      transports: ['internal'],
    })

    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: authenticatorId! })
    expect(credentials).toHaveLength(1)
    const [stored] = credentials
    expect(stored).toMatchObject({ isResidentCredential: true, rpId: 'localhost' })
    expect(base64ToBase64Url(stored!.credentialId)).toBe(credentialId)
    expect(base64ToBase64Url(stored!.userHandle ?? '')).toBe(userHandle)
  })

  it('signs in usernameless with it (empty allowCredentials), and the challenge is single use', async () => {
    const options = await pageJson(app, `${apiUrl}/api/v1/auth/passkeys/login/options`, { method: 'POST', body: {} })
    expect(options.status).toBe(200)
    const challengeId = options.body?.challenge_id as string
    const request = options.body?.options as { rpId: string; allowCredentials: unknown[] }
    expect(request).toMatchObject({ rpId: 'localhost', allowCredentials: [] })

    const asserted = await ceremony(app, 'get', request)
    expect(asserted.error).toBeUndefined()
    const assertion = asserted.credential!
    expect(assertion.id).toBe(credentialId)
    // A discoverable credential names its user: the server finds the account without a username.
    expect(assertion.response.userHandle).toBe(userHandle)

    const signedIn = await pageJson(app, `${apiUrl}/api/v1/auth/passkeys/login`, {
      method: 'POST',
      body: { challenge_id: challengeId, response: assertion },
    })
    expect(signedIn.error).toBeUndefined()
    expect(signedIn.status).toBe(200)
    const accessToken = signedIn.body?.access_token
    expect(accessToken).toEqual(expect.any(String))

    const me = await pageJson(app, `${apiUrl}/api/v1/users/me`, { token: accessToken as string })
    expect(me.status).toBe(200)
    expect(me.body).toMatchObject({ id: userId, username, passkeys: 1 })

    // A fresh assertion (its counter higher, its signature good) over the same challenge: the
    // challenge was taken by the sign-in above, so only the challenge check can refuse it.
    const again = await ceremony(app, 'get', request)
    expect(again.error).toBeUndefined()
    const replayed = await pageJson(app, `${apiUrl}/api/v1/auth/passkeys/login`, {
      method: 'POST',
      body: { challenge_id: challengeId, response: again.credential },
    })
    expect(replayed.status).toBe(401)
    expect(replayed.body).toMatchObject({ status: 401, code: 'invalid_credentials' })
    expect(replayed.body).not.toHaveProperty('access_token')

    const listed = await pageJson(app, `${apiUrl}/api/v1/auth/passkeys`, { token: accessToken as string })
    expect(listed.status).toBe(200)
    const passkeys = listed.body?.results as { last_used_at: string | null }[]
    expect(passkeys).toHaveLength(1)
    expect(passkeys[0]?.last_used_at).toEqual(expect.any(String))
  })
})
