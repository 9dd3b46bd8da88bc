import { DurableObject } from 'cloudflare:workers'
import type { Env } from '../config'
import { REVOCATION_FILTER_KEY, SESSION_KEY_PREFIX, encodeRevocationFilter, fingerprintOf } from './revocation-filter'

// The one writer of the shared revocation filter (src/sessions/revocation-filter.ts). KV takes at
// most one write per second per key and keeps the last, so revocations made anywhere at once
// cannot each rewrite it: they are recorded here (SQLite, durable before the revoking request is
// answered) and published together by the alarm, at most once per PUBLISH_INTERVAL_MS. A burst of
// any size therefore costs one KV write per second, and every revocation recorded is in the next
// copy, published at most PUBLISH_INTERVAL_MS after it (docs/design.md § Revocation).

/** One session in the filter until `until` (epoch seconds), when its last token has expired. */
export interface FilterEntry {
  sid: string
  until: number
}

/** KV's limit for writes to one key. */
export const PUBLISH_INTERVAL_MS = 1000
/** After a failed KV write. */
const RETRY_MS = 5000
/** Expired entries alone do not hurry a publish: a copy that only shrinks can wait this long. */
const PRUNE_DELAY_MS = 60_000

export class RevocationPublisher extends DurableObject<Env> {
  /** The copy being written: the next one waits for it, so an older copy never lands last. */
  #writing: Promise<void> = Promise.resolve()
  /** When the last copy's write finished (epoch ms): the next starts at least an interval later. */
  #lastWritten = 0

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    ctx.storage.sql.exec(
      `CREATE TABLE IF NOT EXISTS revoked (sid TEXT PRIMARY KEY, fingerprint INTEGER NOT NULL, until INTEGER NOT NULL);
       CREATE TABLE IF NOT EXISTS published (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);`,
    )
  }

  /**
   * Records sessions to publish (a repeat keeps the later expiry) and answers, once they are
   * stored, when the copy holding them will be written (epoch ms).
   */
  async record(entries: FilterEntry[]): Promise<{ publishAt: number }> {
    for (const entry of entries) this.#store(entry)
    return { publishAt: await this.#publishSoon() }
  }

  #store({ sid, until }: FilterEntry): void {
    this.ctx.storage.sql.exec(
      'INSERT INTO revoked (sid, fingerprint, until) VALUES (?, ?, ?) ON CONFLICT (sid) DO UPDATE SET until = max(until, excluded.until)',
      sid,
      fingerprintOf(sid),
      until,
    )
  }

  /**
   * Publishes a first copy soon if none was ever written. Until one exists each check reads the
   * exact key; a check that finds no filter asks for one here.
   */
  async ensurePublished(): Promise<void> {
    if (this.#lastPublishedAt() !== undefined) return
    await this.#publishSoon()
  }

  /** The copy as the next publish would write it (tests read it without racing other writers). */
  async currentCopy(): Promise<ArrayBuffer> {
    return encodeRevocationFilter(this.#liveFingerprints(Date.now()), new Date(this.#lastPublishedAt() ?? 0))
  }

  /** When the last copy was made (epoch ms), undefined before the first. */
  async lastPublished(): Promise<number | undefined> {
    return this.#lastPublishedAt()
  }

  override async alarm(): Promise<void> {
    const previous = this.#writing
    const writing = previous.then(() => this.#publish())
    this.#writing = writing.catch(() => undefined)
    await writing
  }

  async #publish(): Promise<void> {
    if (this.#lastPublishedAt() === undefined) await this.#seedFromExactKeys()
    // KV's one write per second per key counts from the write before: wait out the interval
    // (what arrives meanwhile goes into this copy).
    const early = this.#lastWritten + PUBLISH_INTERVAL_MS - Date.now()
    if (early > 0) await scheduler.wait(early)
    const now = Date.now()
    const sql = this.ctx.storage.sql
    sql.exec('DELETE FROM revoked WHERE until <= ?', Math.floor(now / 1000))
    const fingerprints = this.#liveFingerprints(now)
    // Set before the write: a record() that arrives while it is under way schedules the next
    // copy a whole interval after this one.
    sql.exec('INSERT INTO published (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at', now)
    try {
      await this.env.REVOKED_TOKENS.put(REVOCATION_FILTER_KEY, encodeRevocationFilter(fingerprints, new Date(now)))
    } catch (err) {
      // Nothing is lost: the entries stay recorded and the next attempt publishes them all.
      console.error(JSON.stringify({ level: 'error', message: 'revocation filter not published', error: nameOf(err) }))
      // A record() during the failed write may have asked for a sooner copy: keep that one.
      const asked = await this.ctx.storage.getAlarm()
      await this.ctx.storage.setAlarm(asked === null ? now + RETRY_MS : Math.min(asked, now + RETRY_MS))
      return
    } finally {
      this.#lastWritten = Date.now()
    }
    if ((await this.ctx.storage.getAlarm()) !== null) return
    // Drop expired entries from the published copy once the earliest of them is over.
    const [earliest] = sql.exec<{ until: number | null }>('SELECT min(until) AS until FROM revoked').toArray()
    if (earliest?.until === null || earliest === undefined) return
    await this.ctx.storage.setAlarm(Math.max(earliest.until * 1000, now + PRUNE_DELAY_MS))
  }

  #liveFingerprints(now: number): number[] {
    return this.ctx.storage.sql
      .exec<{ fingerprint: number }>('SELECT fingerprint FROM revoked WHERE until > ?', Math.floor(now / 1000))
      .toArray()
      .map((row) => row.fingerprint)
  }

  /**
   * Before the first copy: the sessions revoked before the filter existed (a deployment that
   * predates it wrote only the exact `sid:` keys), each for at most the access-token lifetime, by
   * when every token edgepress minted before now has expired: no revocation of a session edgepress
   * issued is lost in the upgrade. (A session of another service holding the key, revoked before
   * the upgrade, is held that long too, not as long as its key: the filter's size stays bounded.)
   */
  async #seedFromExactKeys(): Promise<void> {
    // The configuration is parsed here only, on the first copy: the class stays light at start-up.
    const { getConfig } = await import('../config')
    const { accessTtlSeconds, leewaySeconds } = getConfig(this.env).tokens
    const until = Math.floor(Date.now() / 1000) + accessTtlSeconds + leewaySeconds
    let cursor: string | undefined
    do {
      const page: KVNamespaceListResult<unknown> = await this.env.REVOKED_TOKENS.list({
        prefix: SESSION_KEY_PREFIX,
        cursor,
      })
      for (const key of page.keys) {
        this.#store({ sid: key.name.slice(SESSION_KEY_PREFIX.length), until: Math.min(until, key.expiration ?? until) })
      }
      cursor = page.list_complete ? undefined : page.cursor
    } while (cursor !== undefined)
  }

  async #publishSoon(): Promise<number> {
    const scheduled = await this.ctx.storage.getAlarm()
    const soonest = Math.max(Date.now(), (this.#lastPublishedAt() ?? 0) + PUBLISH_INTERVAL_MS)
    // A prune scheduled for later gives way to the revocation.
    if (scheduled !== null && scheduled <= soonest) return scheduled
    await this.ctx.storage.setAlarm(soonest)
    return soonest
  }

  #lastPublishedAt(): number | undefined {
    const [row] = this.ctx.storage.sql.exec<{ at: number }>('SELECT at FROM published WHERE id = 1').toArray()
    return row?.at
  }
}

function nameOf(err: unknown): string {
  return err instanceof Error ? err.name : 'unknown'
}
