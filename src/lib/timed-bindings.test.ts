import { env } from 'cloudflare:workers'
import { eq } from 'drizzle-orm'
import { describe, expect, it } from 'vitest'
import { users } from '../db/schema'
import { createDb } from '../db/client'
import { newTimings, timedD1, timedKv } from './timed-bindings'
import { DependencyUnavailable } from './outages'
import type { BindingTimings } from './timed-bindings'

/** A clock that moves only when a fake binding says its I/O took time. */
interface ManualClock {
  now: () => number
  advance: (ms: number) => void
}

function manualClock(): ManualClock {
  let now = 1_000
  return {
    now: () => now,
    advance: (ms) => {
      now += ms
    },
  }
}

function noTimings(): BindingTimings {
  return newTimings()
}

/**
 * Resolves with `value` once `ms` have passed on the clock. The clock moves after the call has
 * returned its promise, as with real I/O: the wrapper starts its stopwatch once the call is made.
 */
async function io<T>(clock: ManualClock, ms: number, value: T): Promise<T> {
  await Promise.resolve()
  clock.advance(ms)
  return value
}

async function failingIo(clock: ManualClock, ms: number, error: Error): Promise<never> {
  await Promise.resolve()
  clock.advance(ms)
  throw error
}

interface FakeStatement {
  query: string
  params: unknown[]
  bind(...params: unknown[]): FakeStatement
  all(): Promise<unknown>
  run(): Promise<unknown>
  first(column?: string): Promise<unknown>
  raw(options?: { columnNames?: boolean }): Promise<unknown>
}

const STATEMENT_MS = { all: 3, run: 5, first: 7, raw: 11 }
const BATCH_MS = 13
const EXEC_MS = 17

/** A D1Database made of plain objects; every statement it creates and every batch it runs is kept. */
function fakeD1(clock: ManualClock) {
  const statements: FakeStatement[] = []
  const batches: unknown[][] = []
  const statement = (query: string, params: unknown[]): FakeStatement => {
    const created: FakeStatement = {
      query,
      params,
      bind: (...bound) => statement(query, bound),
      all: () => io(clock, STATEMENT_MS.all, { results: [{ query, params }], success: true }),
      run: () => io(clock, STATEMENT_MS.run, { success: true, meta: { changes: 1 } }),
      first: (column) => io(clock, STATEMENT_MS.first, { column: column ?? null, params }),
      raw: (options) => io(clock, STATEMENT_MS.raw, options?.columnNames === true ? [['id'], [1]] : [[1]]),
    }
    statements.push(created)
    return created
  }
  const db = {
    label: 'fake-d1',
    prepare: (query: string) => statement(query, []),
    batch: (list: unknown[]) => {
      batches.push(list)
      return io(
        clock,
        BATCH_MS,
        list.map(() => ({ success: true })),
      )
    },
    exec: (query: string) => io(clock, EXEC_MS, { count: query.split(';').length, duration: 0 }),
    dump: () => io(clock, 1_000, new ArrayBuffer(8)),
    withSession(this: unknown) {
      return this
    },
  }
  return { db, binding: db as unknown as D1Database, statements, batches }
}

const KV_MS = { get: 2, getWithMetadata: 4, put: 8, delete: 16, list: 32 }

function fakeKv(clock: ManualClock) {
  const calls: [string, unknown[]][] = []
  const record = <T>(method: keyof typeof KV_MS, args: unknown[], value: T): Promise<T> => {
    calls.push([method, args])
    return io(clock, KV_MS[method], value)
  }
  const kv = {
    namespace: 'REVOKED_TOKENS',
    get: (...args: unknown[]) => record('get', args, 'stored value'),
    getWithMetadata: (...args: unknown[]) => record('getWithMetadata', args, { value: 'v', metadata: { m: 1 } }),
    put: (...args: unknown[]) => record('put', args, undefined),
    delete: (...args: unknown[]) => record('delete', args, undefined),
    list: (...args: unknown[]) => record('list', args, { keys: [{ name: 'k' }], list_complete: true }),
    self(this: unknown) {
      return this
    },
  }
  return { kv, binding: kv as unknown as KVNamespace, calls }
}

describe('timedD1', () => {
  it('adds the wait of all(), run(), first() and raw() on bound statements to d1Ms', async () => {
    const clock = manualClock()
    const fake = fakeD1(clock)
    const timings = noTimings()
    const db = timedD1(fake.binding, timings, clock.now)

    const statement = db.prepare('SELECT * FROM users WHERE id = ? AND name = ?').bind(7, 'ada')
    expect(await statement.all()).toEqual({
      results: [{ query: 'SELECT * FROM users WHERE id = ? AND name = ?', params: [7, 'ada'] }],
      success: true,
    })
    expect(timings.d1Ms).toBe(3)
    expect(await statement.run()).toEqual({ success: true, meta: { changes: 1 } })
    expect(timings.d1Ms).toBe(3 + 5)
    expect(await statement.first('name')).toEqual({ column: 'name', params: [7, 'ada'] })
    expect(timings.d1Ms).toBe(3 + 5 + 7)
    expect(await statement.raw({ columnNames: true })).toEqual([['id'], [1]])
    expect(timings.d1Ms).toBe(3 + 5 + 7 + 11)
    expect(timings.kvMs).toBe(0)
  })

  it('times unbound statements and rebinding too', async () => {
    const clock = manualClock()
    const fake = fakeD1(clock)
    const timings = noTimings()
    const db = timedD1(fake.binding, timings, clock.now)

    await db.prepare('SELECT 1').first()
    const rebound = db.prepare('SELECT ?').bind(1).bind(2)
    expect(await rebound.all()).toMatchObject({ results: [{ params: [2] }] })
    expect(timings.d1Ms).toBe(STATEMENT_MS.first + STATEMENT_MS.all)
  })

  it('times batch() and hands D1 its original statement objects, not the proxies', async () => {
    const clock = manualClock()
    const fake = fakeD1(clock)
    const timings = noTimings()
    const db = timedD1(fake.binding, timings, clock.now)

    const insert = db.prepare('INSERT INTO posts (title) VALUES (?)').bind('hello')
    const select = db.prepare('SELECT * FROM posts')
    const foreign = fake.db.prepare('SELECT 2') as unknown as D1PreparedStatement
    const results = await db.batch([insert, select, foreign])

    expect(results).toEqual([{ success: true }, { success: true }, { success: true }])
    expect(fake.batches).toHaveLength(1)
    const received = fake.batches[0]!
    // statements: [0] prepare(INSERT), [1] its bind('hello'), [2] prepare(SELECT), [3] the foreign one.
    expect(received[0]).toBe(fake.statements[1])
    expect(received[1]).toBe(fake.statements[2])
    expect(received[2]).toBe(foreign)
    expect(received[0]).not.toBe(insert)
    expect(received[1]).not.toBe(select)
    expect(timings.d1Ms).toBe(BATCH_MS)
  })

  it('times exec()', async () => {
    const clock = manualClock()
    const fake = fakeD1(clock)
    const timings = noTimings()
    const db = timedD1(fake.binding, timings, clock.now)

    expect(await db.exec('CREATE TABLE t (x); DROP TABLE t')).toEqual({ count: 2, duration: 0 })
    expect(timings.d1Ms).toBe(EXEC_MS)
  })

  it('records the wait of a failing query and passes its error on', async () => {
    const clock = manualClock()
    const fake = fakeD1(clock)
    const timings = noTimings()
    const db = timedD1(fake.binding, timings, clock.now)
    const statement = db.prepare('SELECT broken')
    const original = fake.statements[0]!
    const error = new Error('D1_ERROR: no such column: broken')
    original.all = () => failingIo(clock, 19, error)

    await expect(statement.all()).rejects.toBe(error)
    expect(timings.d1Ms).toBe(19)
  })

  it('passes other properties and methods through, called on the real binding, untimed', async () => {
    const clock = manualClock()
    const fake = fakeD1(clock)
    const timings = noTimings()
    const db = timedD1(fake.binding, timings, clock.now)

    expect((db as unknown as { label: string }).label).toBe('fake-d1')
    // Workers bindings refuse a proxy as `this` ("Illegal invocation"): the target must be used.
    expect(db.withSession()).toBe(fake.db)
    expect((db.prepare('SELECT ?') as unknown as FakeStatement).query).toBe('SELECT ?')
    await db.dump()
    expect(timings).toMatchObject({ d1Ms: 0, kvMs: 0 })
  })

  it('adds to the timings it was given, across bindings sharing them', async () => {
    const clock = manualClock()
    const timings: BindingTimings = { ...newTimings(), d1Ms: 100, kvMs: 50 }
    const db = timedD1(fakeD1(clock).binding, timings, clock.now)
    const kv = timedKv(fakeKv(clock).binding, timings, clock.now)

    await db.prepare('SELECT 1').run()
    await kv.get('key')
    expect(timings).toMatchObject({ d1Ms: 100 + STATEMENT_MS.run, kvMs: 50 + KV_MS.get })
  })
})

describe('timedKv', () => {
  it('adds the wait of get, getWithMetadata, put, delete and list to kvMs, passing arguments and results', async () => {
    const clock = manualClock()
    const fake = fakeKv(clock)
    const timings = noTimings()
    const kv = timedKv(fake.binding, timings, clock.now)

    expect(await kv.get('sid:1')).toBe('stored value')
    expect(timings.kvMs).toBe(2)
    expect(await kv.getWithMetadata('sid:1')).toEqual({ value: 'v', metadata: { m: 1 } })
    expect(timings.kvMs).toBe(2 + 4)
    await kv.put('sid:2', '1', { expirationTtl: 60 })
    expect(timings.kvMs).toBe(2 + 4 + 8)
    await kv.delete('sid:2')
    expect(timings.kvMs).toBe(2 + 4 + 8 + 16)
    expect(await kv.list({ prefix: 'sid:' })).toEqual({ keys: [{ name: 'k' }], list_complete: true })
    expect(timings.kvMs).toBe(2 + 4 + 8 + 16 + 32)
    expect(timings.d1Ms).toBe(0)
    expect(fake.calls).toEqual([
      ['get', ['sid:1']],
      ['getWithMetadata', ['sid:1']],
      ['put', ['sid:2', '1', { expirationTtl: 60 }]],
      ['delete', ['sid:2']],
      ['list', [{ prefix: 'sid:' }]],
    ])
  })

  it('records the wait of a failing operation and passes an outage on as DependencyUnavailable', async () => {
    const clock = manualClock()
    const fake = fakeKv(clock)
    const timings = noTimings()
    const error = new Error('KV GET failed: 503')
    fake.kv.get = () => failingIo(clock, 23, error)
    const kv = timedKv(fake.binding, timings, clock.now)

    const thrown = await kv.get('sid:1').catch((err: unknown) => err)
    expect(thrown).toBeInstanceOf(DependencyUnavailable)
    expect((thrown as DependencyUnavailable).dependency).toBe('KV')
    expect((thrown as Error).cause).toBe(error)
    expect(timings.kvMs).toBe(23)
  })

  it('passes an argument error on unchanged: a bug, not an outage', async () => {
    const clock = manualClock()
    const fake = fakeKv(clock)
    const error = new Error('KV PUT failed: 400 Invalid expiration_ttl of 5')
    fake.kv.get = () => failingIo(clock, 1, error)
    const kv = timedKv(fake.binding, noTimings(), clock.now)

    await expect(kv.get('sid:1')).rejects.toBe(error)
  })

  it('passes other properties and methods through, called on the real binding, untimed', () => {
    const clock = manualClock()
    const fake = fakeKv(clock)
    const timings = noTimings()
    const kv = timedKv(fake.binding, timings, clock.now) as unknown as typeof fake.kv

    expect(kv.namespace).toBe('REVOKED_TOKENS')
    expect(kv.self()).toBe(fake.kv)
    expect(timings).toMatchObject({ d1Ms: 0, kvMs: 0 })
  })
})

describe('timedD1 on the real D1 binding', () => {
  /** A clock that ticks once per reading: each D1 round trip then adds exactly 1 to d1Ms. */
  function tickingClock(): () => number {
    let ticks = 0
    return () => ticks++
  }

  it('runs drizzle queries and db.batch through the wrapper, one timed round trip each', async () => {
    const timings = noTimings()
    const db = createDb({ DB: timedD1(env.DB, timings, tickingClock()) })
    const username = `timed_${crypto.randomUUID().slice(0, 8)}`
    const now = new Date()

    const [inserted] = await db
      .insert(users)
      .values({
        username,
        email: `${username}@example.com`,
        passwordHash: 'not-a-real-hash',
        createdAt: now,
        updatedAt: now,
      })
      .returning({ id: users.id })
    expect(inserted?.id).toBeTypeOf('number')
    expect(timings.d1Ms).toBe(1)

    const found = await db.query.users.findFirst({ where: eq(users.id, inserted!.id) })
    expect(found?.username).toBe(username)
    expect(timings.d1Ms).toBe(2)

    const renamed = `${username}_renamed`
    const [updated, selected] = await db.batch([
      db
        .update(users)
        .set({ username: renamed })
        .where(eq(users.id, inserted!.id))
        .returning({ username: users.username }),
      db.select({ username: users.username }).from(users).where(eq(users.id, inserted!.id)),
    ])
    expect(updated).toEqual([{ username: renamed }])
    expect(selected).toEqual([{ username: renamed }])
    expect(timings.d1Ms).toBe(3)
    expect(timings.kvMs).toBe(0)

    const direct = await env.DB.prepare('SELECT username FROM users WHERE id = ?')
      .bind(inserted!.id)
      .first<{ username: string }>()
    expect(direct?.username).toBe(renamed)
  })

  it('keeps db.batch atomic: a failing statement rolls the whole batch back', async () => {
    const timings = noTimings()
    const db = createDb({ DB: timedD1(env.DB, timings, tickingClock()) })
    const username = `timed_${crypto.randomUUID().slice(0, 8)}`
    const now = new Date()
    const row = {
      username,
      email: `${username}@example.com`,
      passwordHash: 'not-a-real-hash',
      createdAt: now,
      updatedAt: now,
    }

    // The second insert repeats the username, which the case-insensitive unique index refuses.
    await expect(
      db.batch([db.insert(users).values(row), db.insert(users).values({ ...row, email: `other_${row.email}` })]),
    ).rejects.toThrow()
    expect(timings.d1Ms).toBe(1)
    expect(await db.query.users.findFirst({ where: eq(users.username, username) })).toBeUndefined()
  })

  it('times KV round trips on the real namespace', async () => {
    const timings = noTimings()
    const kv = timedKv(env.REVOKED_TOKENS, timings, tickingClock())
    const key = `timed-test:${crypto.randomUUID()}`

    await kv.put(key, 'value', { expirationTtl: 60 })
    expect(await kv.get(key)).toBe('value')
    expect((await kv.list({ prefix: key })).keys.map((k) => k.name)).toEqual([key])
    await kv.delete(key)
    expect(await kv.get(key)).toBeNull()
    expect(timings).toMatchObject({ d1Ms: 0, kvMs: 5 })
  })
})

describe('the write gate', () => {
  /** A gate that opens when `open()` is called, and what has run so far. */
  function closedGate(): { gate: { ready: Promise<void> }; open: () => void } {
    let open = (): void => undefined
    const ready = new Promise<void>((resolve) => {
      open = resolve
    })
    return { gate: { ready }, open }
  }

  it('lets a plain SELECT through at once and holds back every other statement until it opens', async () => {
    const { gate, open } = closedGate()
    const db = timedD1(env.DB, noTimings(), undefined, gate)
    const finished: string[] = []
    const track = (label: string, promise: Promise<unknown>) => promise.then(() => finished.push(label))

    const select = track('select', db.prepare('SELECT 1 AS one').first())
    // Not a plain SELECT, so it waits, even though this one only reads: the gate is an allow-list.
    const withQuery = track('with', db.prepare('WITH t AS (SELECT 1 AS one) SELECT one FROM t').first())
    const pragma = track('pragma', db.prepare('PRAGMA foreign_keys').first())
    const batch = track('batch', db.batch([db.prepare('SELECT 1'), db.prepare('UPDATE users SET id = id WHERE 0')]))
    await select
    // Statements D1 received before this one have answered by the time it does: had the gate let
    // them through, they would be finished now.
    await env.DB.prepare('SELECT 2').first()
    await env.DB.prepare('SELECT 3').first()
    expect(finished).toEqual(['select'])

    open()
    await Promise.all([withQuery, pragma, batch])
    expect(finished.sort()).toEqual(['batch', 'pragma', 'select', 'with'])
  })
})
