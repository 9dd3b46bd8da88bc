import { Secret, TOTP } from 'otpauth'
import { afterEach, beforeEach, vi } from 'vitest'

// The clock of the TOTP and step-up suites. The worker runs in the test's isolate
// (test/helpers.ts fetchWorker) and reads the same Date, so each test stops it in the middle of a
// 30 s TOTP step and moves it on by hand: no code straddles a step boundary and no age depends on
// how fast the machine is.

export const TOTP_STEP_MS = 30_000

export interface StoppedClock {
  /** The stopped time, in milliseconds. */
  now(): number
  /** Moves the clock on by `ms`. */
  advance(ms: number): void
}

/** Registers the hooks that stop Date mid-step before each test of the file and restart it after. */
export function stopTheClockMidStep(): StoppedClock {
  let clock = 0
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] })
    clock = Math.floor(Date.now() / TOTP_STEP_MS) * TOTP_STEP_MS + TOTP_STEP_MS / 2
    vi.setSystemTime(clock)
  })
  afterEach(() => {
    vi.useRealTimers()
  })
  return {
    now: () => clock,
    advance(ms) {
      clock += ms
      vi.setSystemTime(clock)
    },
  }
}

/** The code an authenticator app shows `offsetSteps` steps from now (RFC 6238: SHA-1, 6 digits, 30 s). */
export function totpCodeAt(secret: string, offsetSteps = 0): string {
  return new TOTP({ secret: Secret.fromBase32(secret), algorithm: 'SHA1', digits: 6, period: 30 }).generate({
    timestamp: Date.now() + offsetSteps * TOTP_STEP_MS,
  })
}
