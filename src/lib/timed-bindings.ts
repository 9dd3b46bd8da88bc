// Wraps the D1 and KV bindings of one request so the time spent waiting on each is added up for
// the Server-Timing header and the request log. Only I/O is timed: in Workers the clock does not
// advance while JavaScript runs, so these numbers are time spent waiting on D1 and KV.

export interface BindingTimings {
  d1Ms: number
  kvMs: number
}

type Clock = () => number

const STATEMENT_RUNNERS = new Set(['all', 'run', 'first', 'raw'])
const KV_METHODS = new Set(['get', 'getWithMetadata', 'put', 'delete', 'list'])

async function timed<T>(promise: Promise<T>, record: (ms: number) => void, started: number, clock: Clock): Promise<T> {
  try {
    return await promise
  } finally {
    record(clock() - started)
  }
}

/** A D1Database whose queries add their wait to `timings.d1Ms`. */
export function timedD1(db: D1Database, timings: BindingTimings, clock: Clock = () => performance.now()): D1Database {
  const originals = new WeakMap<object, D1PreparedStatement>()
  const record = (ms: number) => {
    timings.d1Ms += ms
  }
  const wrapStatement = (statement: D1PreparedStatement): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown
        if (typeof value !== 'function') return value
        if (property === 'bind') return (...args: unknown[]) => wrapStatement(target.bind(...args))
        if (typeof property === 'string' && STATEMENT_RUNNERS.has(property)) {
          return (...args: unknown[]) => timed((value as (...a: unknown[]) => Promise<unknown>).apply(target, args), record, clock(), clock)
        }
        return (value as (...a: unknown[]) => unknown).bind(target)
      },
    })
    originals.set(proxy, statement)
    return proxy
  }
  return new Proxy(db, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (property === 'prepare') return (query: string) => wrapStatement(target.prepare(query))
      if (property === 'batch') {
        // D1 must see its own statement objects, not our proxies.
        return (statements: D1PreparedStatement[]) =>
          timed(target.batch(statements.map((s) => originals.get(s) ?? s)), record, clock(), clock)
      }
      if (property === 'exec') return (query: string) => timed(target.exec(query), record, clock(), clock)
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
    },
  })
}

/** A KVNamespace whose operations add their wait to `timings.kvMs`. */
export function timedKv(kv: KVNamespace, timings: BindingTimings, clock: Clock = () => performance.now()): KVNamespace {
  const record = (ms: number) => {
    timings.kvMs += ms
  }
  return new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown
      if (typeof value !== 'function') return value
      if (typeof property === 'string' && KV_METHODS.has(property)) {
        return (...args: unknown[]) => timed((value as (...a: unknown[]) => Promise<unknown>).apply(target, args), record, clock(), clock)
      }
      return (value as (...a: unknown[]) => unknown).bind(target)
    },
  })
}
