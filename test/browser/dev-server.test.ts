// `wrangler dev` as `npm run dev` starts it (test/browser/global-setup.ts), no browser needed:
// the local mail queue hands every outbox row on in a burst, and the documented way to run the
// cron locally, GET /__scheduled, works.
import { readFileSync } from 'node:fs'
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
    const response = await fetch(`${apiUrl}/__scheduled`)
    expect(response.status).toBe(200)
    await response.body?.cancel()
    const log = await logWhen((text) => text.split('scheduled maintenance').length > before, 30_000)
    expect(log.split('scheduled maintenance').length).toBeGreaterThan(before)
  })
})
