// GET /docs in a real browser: Swagger UI served by the Worker's static assets renders every
// operation from /openapi.json under the page's strict CSP, loads nothing from another host,
// and "Try it out" really calls the API.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, BrowserContext, Page, Response } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { isLocalUrl, launchChromium, printServerLogOnFailure } from './chromium'

const apiUrl = inject('apiUrl')
printServerLogOnFailure(inject('wranglerLog'))
const tmpDir = inject('tmpDir')

/** The CSP public/_headers gives /docs. */
function docsCspFromHeadersFile(): string {
  const lines = readFileSync(new URL('../../public/_headers', import.meta.url), 'utf8').split('\n')
  const start = lines.findIndex((line) => line.trim() === '/docs')
  const line = lines.slice(start + 1).find((candidate) => /^\s+Content-Security-Policy:/.test(candidate))
  if (start < 0 || line === undefined) throw new Error('public/_headers has no CSP for /docs')
  return line.replace(/^\s+Content-Security-Policy:\s*/, '').trim()
}

describe('/docs in chromium', () => {
  let browser: Browser
  let context: BrowserContext
  let page: Page
  let docsResponse: Response | null
  const requests: string[] = []
  const consoleErrors: string[] = []
  const pageErrors: string[] = []
  const failedResponses: string[] = []

  beforeAll(async () => {
    browser = await launchChromium()
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    // Collects CSP violations from the page itself (init scripts run outside the page's CSP).
    await context.addInitScript(() => {
      const seen: string[] = []
      Object.defineProperty(window, '__cspViolations', { value: seen })
      document.addEventListener('securitypolicyviolation', (event) => {
        seen.push(`${event.violatedDirective} blocked ${event.blockedURI}`)
      })
    })
    page = await context.newPage()
    page.on('request', (request) => requests.push(request.url()))
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(`${message.text()} (${message.location().url})`)
    })
    page.on('pageerror', (error) => pageErrors.push(String(error)))
    page.on('response', (res) => {
      if (res.status() >= 400) failedResponses.push(`${res.status()} ${res.url()}`)
    })
    docsResponse = await page.goto(`${apiUrl}/docs`, { waitUntil: 'load' })
    await page.locator('.opblock').first().waitFor({ state: 'visible', timeout: 30_000 })
  })

  afterAll(async () => {
    await browser?.close()
  })

  it('is served with the Content-Security-Policy from public/_headers', async () => {
    expect(docsResponse?.status()).toBe(200)
    const headers = (await docsResponse?.allHeaders()) ?? {}
    expect(headers['content-security-policy']).toBe(docsCspFromHeadersFile())
    expect(headers['content-security-policy']).toContain("script-src 'self'")
    expect(headers['x-frame-options']).toBe('DENY')
    expect(await page.title()).toBe('edgepress API reference')
  })

  it('renders every operation of the OpenAPI document', async () => {
    const operations = page.locator('.opblock')
    expect(await operations.count()).toBeGreaterThanOrEqual(30)
    const paths = await page
      .locator('.opblock-summary-path')
      .evaluateAll((nodes) => nodes.map((node) => node.getAttribute('data-path') ?? node.textContent ?? ''))
    expect(paths).toContain('/api/v1/auth/token')
    expect(paths).toContain('/api/v1/posts')
    // As many operations on the page as in the document the page was given.
    const document = (await (await fetch(`${apiUrl}/openapi.json`)).json()) as { paths: Record<string, object> }
    const methods = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'])
    const inDocument = Object.values(document.paths).flatMap((item) =>
      Object.keys(item).filter((key) => methods.has(key)),
    )
    expect(await operations.count()).toBe(inDocument.length)
  })

  it('"Try it out" on GET /api/v1/health shows 200 and status ok', async () => {
    const health = page.locator('.opblock.opblock-get').filter({
      has: page.locator('.opblock-summary-path[data-path="/api/v1/health"]'),
    })
    await expect.poll(() => health.count()).toBe(1)
    await health.locator('.opblock-summary').first().click()
    // docs.js sets tryItOutEnabled, so the operation may already be in try-out mode.
    const tryOut = health.getByRole('button', { name: 'Try it out' })
    if (await tryOut.isVisible()) await tryOut.click()
    const answered = page.waitForResponse(
      (res) => res.url() === `${apiUrl}/api/v1/health` && res.request().method() === 'GET',
    )
    await health.getByRole('button', { name: 'Execute' }).click()
    expect((await answered).status()).toBe(200)

    const status = health.locator('.live-responses-table .response .response-col_status').first()
    await expect.poll(() => status.textContent(), { timeout: 15_000 }).toMatch(/^\s*200/)
    const body = health.locator('.live-responses-table .response-col_description pre').first()
    await expect.poll(() => body.textContent(), { timeout: 15_000 }).toContain('"status": "ok"')

    await body.scrollIntoViewIfNeeded()
    await page.screenshot({ path: join(tmpDir, 'docs-try-it-out.png') })
  })

  it('loaded nothing from another host and hit no CSP violation or console error', async () => {
    expect(requests.length).toBeGreaterThan(3)
    expect(requests.filter((url) => !isLocalUrl(url))).toEqual([])
    expect(requests).toContain(`${apiUrl}/openapi.json`)
    expect(requests).toContain(`${apiUrl}/docs-assets/vendor/swagger-ui-bundle.js`)
    const violations = await page.evaluate(() => (window as unknown as { __cspViolations: string[] }).__cspViolations)
    expect(violations).toEqual([])
    expect(failedResponses).toEqual([])
    // The browser's own /favicon.ico request (public/ has no favicon) is the only 404 tolerated.
    const favicon = `(${apiUrl}/favicon.ico)`
    expect(consoleErrors.filter((text) => !(text.includes('404') && text.endsWith(favicon)))).toEqual([])
    expect(pageErrors).toEqual([])
  })

  it('goes through the Worker: echoes X-Request-Id and answers a wrong method with 405 + Allow', async () => {
    const page = await fetch(`${apiUrl}/docs`, { headers: { 'x-request-id': 'docs-check-1' } })
    expect(page.status).toBe(200)
    expect(page.headers.get('x-request-id')).toBe('docs-check-1')
    const wrong = await fetch(`${apiUrl}/docs`, { method: 'POST' })
    expect(wrong.status).toBe(405)
    expect(wrong.headers.get('allow')).toContain('GET')
    expect(wrong.headers.get('content-type')).toBe('application/problem+json')
  })
})
