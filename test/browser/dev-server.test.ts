// `wrangler dev` as `npm run dev` starts it (test/browser/global-setup.ts), no browser needed:
// the local mail queue hands every outbox row on in a burst, and the documented way to run the
// cron locally, GET /__scheduled, works.
import { readFileSync } from 'node:fs'
import { get } from 'node:http'
import { describe, expect, inject, it } from 'vitest'
import { printServerLogOnFailure } from './chromium'

const apiUrl = inject('apiUrl')
const wranglerLog = inject('wranglerLog')
printServerLogOnFailure(wranglerLog)

/** Polls the server log until `done` holds or `deadlineMs` passes; answers the last log read. */
async function logWhen(done: (log: string) => boolean, deadlineMs: number): Promise<string> {
  const until = Date.now() + deadlineMs
  for (;;) {
    const log = readFileSync(wranglerLog, 'utf8')
    if (done(log) || Date.now() > until) return log
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}

/**
 * GET on a connection of its own, as `curl` makes it: the burst before leaves the pool of fetch()
 * full of kept-alive sockets, and the cron's answer should not depend on one of them still being
 * usable. Rejects after `timeoutMs` with what was asked, rather than leaving the test to time out.
 */
function getOnFreshConnection(url: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = get(url, { agent: false, timeout: timeoutMs }, (response) => {
      response.resume()
      response.on('end', () => resolve(response.statusCode ?? 0))
    })
    request.on('timeout', () => request.destroy(new Error(`no answer to GET ${url} within ${timeoutMs} ms`)))
    request.on('error', reject)
  })
}

describe('wrangler dev', () => {
  it('attempts every confirmation email of a burst of 125 subscriptions, through the local queue', async () => {
    const tag = `burst${Date.now().toString(36)}`
    const addresses = Array.from({ length: 125 }, (_, i) => `${tag}-${i}@example.com`)
    const statuses = await Promise.all(
      addresses.map(async (email) => {
        const response = await fetch(`${apiUrl}/api/v1/subscribers`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ email }),
        })
        await response.body?.cancel()
        return response.status
      }),
    )
    expect(statuses.every((status) => status === 202)).toBe(true)
    // The deadline bounds a hang; the console transport prints each email as it is delivered.
    const printed = (log: string) => addresses.filter((email) => log.includes(`To: ${email}`))
    const log = await logWhen((text) => printed(text).length === addresses.length, 60_000)
    expect(addresses.filter((email) => !printed(log).includes(email))).toEqual([])
  })

  it('runs the cron on GET /__scheduled (`curl http://localhost:8787/__scheduled`, docs/deploy.md)', async () => {
    const before = readFileSync(wranglerLog, 'utf8').split('scheduled maintenance').length
    expect(await getOnFreshConnection(`${apiUrl}/__scheduled`, 25_000)).toBe(200)
    const log = await logWhen((text) => text.split('scheduled maintenance').length > before, 30_000)
    expect(log.split('scheduled maintenance').length).toBeGreaterThan(before)
  })
})
