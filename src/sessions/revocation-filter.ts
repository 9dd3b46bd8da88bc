// The shared revocation structure every signed-in request reads: a fingerprint of each session
// revoked within the last access-token lifetime, sorted, in one small binary KV value. It is a
// filter, not the answer: a fingerprint it holds sends the check on to the session's exact key
// (`sid:<sid>`), so a collision costs one more read and never refuses a live session; a
// fingerprint it lacks means "not revoked when this copy was published".
//
// Layout (little-endian): u32 format tag, u32 entry count, f64 publishing time (epoch ms), then the
// fingerprints as u32, ascending and distinct. 16 bytes of header and 4 bytes per revoked session.

/** The KV key of the filter in REVOKED_TOKENS (src/sessions/revocation-keys.ts names the others). */
export const REVOCATION_FILTER_KEY = 'revocations:recent'
/** The prefix of the exact per-session keys (`sid:<sid>`). */
export const SESSION_KEY_PREFIX = 'sid:'

const FORMAT_TAG = 0x45505246 // "EPRF", version 1
const HEADER_BYTES = 16

/**
 * 32-bit FNV-1a of the session id. Not a secret and not collision-resistant on purpose: session
 * ids are random UUIDs, so n revocations make a live session's lookup miss the filter with
 * probability about 1 - n / 2^32, and a crafted collision only makes its own token's check read
 * one more key.
 */
export function fingerprintOf(sid: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < sid.length; i += 1) {
    hash ^= sid.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

/** The filter holding `fingerprints` (any order, repeats allowed), as published at `publishedAt`. */
export function encodeRevocationFilter(fingerprints: Iterable<number>, publishedAt: Date): ArrayBuffer {
  const sorted = Uint32Array.from(new Set(fingerprints)).sort()
  const buffer = new ArrayBuffer(HEADER_BYTES + sorted.byteLength)
  const view = new DataView(buffer)
  view.setUint32(0, FORMAT_TAG, true)
  view.setUint32(4, sorted.length, true)
  view.setFloat64(8, publishedAt.getTime(), true)
  for (let i = 0; i < sorted.length; i += 1) view.setUint32(HEADER_BYTES + i * 4, sorted[i] ?? 0, true)
  return buffer
}

export interface RevocationFilter {
  publishedAt: Date
  size: number
  /** True when `sid` may be revoked (its fingerprint is in the filter). */
  mayHold(sid: string): boolean
}

/** Reads a published filter; undefined when the bytes are not one (then callers read exact keys). */
export function decodeRevocationFilter(buffer: ArrayBuffer): RevocationFilter | undefined {
  if (buffer.byteLength < HEADER_BYTES) return undefined
  const view = new DataView(buffer)
  if (view.getUint32(0, true) !== FORMAT_TAG) return undefined
  const size = view.getUint32(4, true)
  if (buffer.byteLength !== HEADER_BYTES + size * 4) return undefined
  const publishedAt = new Date(view.getFloat64(8, true))
  const at = (i: number): number => view.getUint32(HEADER_BYTES + i * 4, true)
  return {
    publishedAt,
    size,
    mayHold(sid) {
      const wanted = fingerprintOf(sid)
      let low = 0
      let high = size - 1
      while (low <= high) {
        const middle = (low + high) >>> 1
        const value = at(middle)
        if (value === wanted) return true
        if (value < wanted) low = middle + 1
        else high = middle - 1
      }
      return false
    },
  }
}
