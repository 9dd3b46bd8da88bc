import { Hono } from 'hono'
import { describe, expect, it } from 'vitest'
import { UNKNOWN_DEVICE, deviceLabel } from '../lib/device-label'
import { deviceOf, sightingOf } from './device'
import { BASE_URL } from '../../test/helpers'

// What a session records of a request's device (src/http/device.ts), from request.cf and the
// User-Agent, on a tiny app whose route answers sightingOf() and deviceOf(). workerd keeps the `cf`
// a Request is built with, as Cloudflare's edge sets it on real requests.

const app = new Hono()
app.get('/', (c) => c.json({ sighting: sightingOf(c), device: deviceOf(c) }))

type Seen = { sighting: { country: string | null; colo: string | null }; device: Record<string, unknown> }

async function seen(cf: Record<string, unknown> | undefined, userAgent?: string): Promise<Seen> {
  const headers: Record<string, string> = userAgent === undefined ? {} : { 'user-agent': userAgent }
  const init = cf === undefined ? { headers } : { headers, cf }
  const res = await app.request(new Request(`${BASE_URL}/`, init as RequestInit))
  expect(res.status).toBe(200)
  return (await res.json()) as Seen
}

const FIREFOX_ON_MAC = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14.5; rv:127.0) Gecko/20100101 Firefox/127.0'

describe('sightingOf', () => {
  it('keeps a two-letter country and a three-letter Cloudflare location', async () => {
    expect((await seen({ country: 'DE', colo: 'FRA' })).sighting).toEqual({ country: 'DE', colo: 'FRA' })
  })

  it('drops XX (no country information) and T1 (Tor), keeping the location', async () => {
    for (const country of ['XX', 'T1']) {
      expect((await seen({ country, colo: 'AMS' })).sighting, country).toEqual({ country: null, colo: 'AMS' })
    }
  })

  it('drops malformed codes, each on its own', async () => {
    for (const country of ['de', 'DEU', 'D', '', ' DE', 49, null]) {
      expect((await seen({ country, colo: 'FRA' })).sighting, String(country)).toEqual({ country: null, colo: 'FRA' })
    }
    for (const colo of ['fra', 'FRAN', 'FR', 'FR1', '', 123]) {
      expect((await seen({ country: 'DE', colo })).sighting, String(colo)).toEqual({ country: 'DE', colo: null })
    }
  })

  it('is null for both without cf (local runs) or with an empty one', async () => {
    for (const cf of [undefined, {}]) {
      expect((await seen(cf)).sighting, JSON.stringify(cf)).toEqual({ country: null, colo: null })
    }
  })
})

describe('deviceOf', () => {
  it("is the User-Agent's label and the sighting, never the raw User-Agent", async () => {
    const { device } = await seen({ country: 'FR', colo: 'CDG' }, FIREFOX_ON_MAC)
    expect(device).toEqual({ label: deviceLabel(FIREFOX_ON_MAC), country: 'FR', colo: 'CDG' })
    expect(device.label).toBe('Firefox on macOS')
    expect(JSON.stringify(device)).not.toContain('Gecko')
  })

  it('labels a request without a User-Agent as an unknown device', async () => {
    expect((await seen(undefined)).device).toEqual({ label: UNKNOWN_DEVICE, country: null, colo: null })
  })
})
