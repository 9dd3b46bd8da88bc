import { describe, expect, it } from 'vitest'
import { signWebhook, verifyWebhook, webhookSecretBytes } from './webhook-signatures'
import type { WebhookHeaders } from './webhook-signatures'

// The example of the Standard Webhooks specification (and Svix's documentation): secret, id,
// timestamp and body, and the signature a sender computes from them.
const SPEC_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const SPEC_ID = 'msg_p5jXN8AQM9LWM0D4loKWxJek'
const SPEC_TIMESTAMP = 1_614_265_330
const SPEC_BODY = '{"test": 2432232314}'
const SPEC_SIGNATURE = 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
const AT_SPEC_TIME = new Date(SPEC_TIMESTAMP * 1000)

const bytes = (text: string) => new TextEncoder().encode(text)

function specHeaders(overrides: Partial<WebhookHeaders> = {}): WebhookHeaders {
  return { id: SPEC_ID, timestamp: String(SPEC_TIMESTAMP), signature: SPEC_SIGNATURE, ...overrides }
}

describe('webhookSecretBytes', () => {
  it('decodes whsec_<base64> secrets of at least 16 bytes', () => {
    expect(webhookSecretBytes(SPEC_SECRET)).toHaveLength(24)
    expect(webhookSecretBytes(`whsec_${btoa('x'.repeat(16))}`)).toHaveLength(16)
  })

  it('refuses anything else', () => {
    for (const secret of [
      '',
      'whsec_',
      'MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      `whsec_${btoa('x'.repeat(15))}`,
      'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwA',
      'whsec_MfKQ9r8GKYqrTwjU-D8ILPZIo2LaLaSw',
      'whsec_MfKQ9r8GKYqrTwjU PD8ILPZIo2LaLaSw',
      'whsec_=MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    ]) {
      expect(webhookSecretBytes(secret), secret).toBeNull()
    }
  })
})

describe('verifyWebhook', () => {
  it("accepts the specification's example", async () => {
    expect(await verifyWebhook(SPEC_SECRET, specHeaders(), bytes(SPEC_BODY), AT_SPEC_TIME)).toBe('valid')
  })

  it('signs like the specification', async () => {
    expect(await signWebhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, bytes(SPEC_BODY))).toBe(SPEC_SIGNATURE)
  })

  it('accepts one matching v1 signature among several, whatever else the header lists', async () => {
    const forged = 'v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='
    const asymmetric = 'v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    for (const signature of [
      `${forged} ${SPEC_SIGNATURE}`,
      `${asymmetric}  ${SPEC_SIGNATURE} ${forged}`,
      `v2,xyz ${SPEC_SIGNATURE}`,
    ]) {
      expect(await verifyWebhook(SPEC_SECRET, specHeaders({ signature }), bytes(SPEC_BODY), AT_SPEC_TIME)).toBe('valid')
    }
  })

  it('refuses a signature of another body, id, timestamp or secret', async () => {
    const other = `whsec_${btoa('another secret of 24 b!')}`
    const cases: [WebhookHeaders, string, string][] = [
      [specHeaders(), '{"test": 2432232315}', SPEC_SECRET],
      [specHeaders(), `${SPEC_BODY} `, SPEC_SECRET],
      [specHeaders({ id: `${SPEC_ID}x` }), SPEC_BODY, SPEC_SECRET],
      [specHeaders({ timestamp: String(SPEC_TIMESTAMP + 1) }), SPEC_BODY, SPEC_SECRET],
      [specHeaders(), SPEC_BODY, other],
    ]
    for (const [headers, body, secret] of cases) {
      expect(await verifyWebhook(secret, headers, bytes(body), AT_SPEC_TIME)).toBe('mismatch')
    }
  })

  it('refuses malformed signatures and headers as a mismatch', async () => {
    for (const overrides of [
      { signature: 'g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' },
      { signature: 'v1,' },
      { signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE' },
      { signature: 'v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=' },
      { signature: 'V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=' },
      { signature: `${SPEC_SIGNATURE} `.repeat(100) },
      { timestamp: `${SPEC_TIMESTAMP}.0` },
      { timestamp: ` ${SPEC_TIMESTAMP}` },
      { timestamp: '-1' },
      { id: 'x'.repeat(257) },
    ]) {
      const verdict = await verifyWebhook(SPEC_SECRET, specHeaders(overrides), bytes(SPEC_BODY), AT_SPEC_TIME)
      expect(verdict, JSON.stringify(overrides).slice(0, 80)).toBe('mismatch')
    }
  })

  it('calls missing or empty headers missing', async () => {
    for (const name of ['id', 'timestamp', 'signature'] as const) {
      for (const value of [undefined, '']) {
        const headers = specHeaders({ [name]: value })
        expect(await verifyWebhook(SPEC_SECRET, headers, bytes(SPEC_BODY), AT_SPEC_TIME), name).toBe('missing')
      }
    }
  })

  it('accepts a timestamp up to 5 minutes away from now, either way, and calls one further stale', async () => {
    const at = (seconds: number) => new Date((SPEC_TIMESTAMP + seconds) * 1000)
    for (const offset of [-300, -1, 1, 300]) {
      expect(await verifyWebhook(SPEC_SECRET, specHeaders(), bytes(SPEC_BODY), at(offset)), String(offset)).toBe(
        'valid',
      )
    }
    for (const offset of [-301, 301, 86_400]) {
      expect(await verifyWebhook(SPEC_SECRET, specHeaders(), bytes(SPEC_BODY), at(offset)), String(offset)).toBe(
        'stale',
      )
    }
  })

  it('signs the exact bytes of the body, invalid UTF-8 included', async () => {
    const body = new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])
    const signature = await signWebhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, body)
    const headers = specHeaders({ signature })
    expect(await verifyWebhook(SPEC_SECRET, headers, body, AT_SPEC_TIME)).toBe('valid')
    expect(await verifyWebhook(SPEC_SECRET, headers, bytes('{\uFFFD\uFFFD}'), AT_SPEC_TIME)).toBe('mismatch')
  })
})
