// autocannon (CommonJS, no bundled types), with types for the part the bench uses.
import { createRequire } from 'node:module'

export interface AutocannonRequest {
  method?: string
  path?: string
  headers?: Record<string, string>
  body?: string
  setupRequest?: (request: AutocannonRequest, context: Record<string, unknown>) => AutocannonRequest
  onResponse?: (status: number, body: string, context: Record<string, unknown>) => void
}

export interface AutocannonOptions {
  url: string
  connections: number
  duration: number
  pipelining?: number
  timeout?: number
  method?: string
  headers?: Record<string, string>
  body?: string
  requests?: AutocannonRequest[]
}

interface Histogram {
  average: number
  mean: number
  p50: number
  p99: number
  max: number
}

export interface AutocannonResult {
  requests: Histogram & { total: number; sent: number }
  latency: Histogram
  errors: number
  timeouts: number
  non2xx: number
  mismatches: number
  duration: number
  statusCodeStats: Record<string, { count: number }>
}

type Autocannon = (
  options: AutocannonOptions,
  callback: (err: Error | null, result: AutocannonResult) => void,
) => unknown
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

/** One autocannon run, as a promise. */
export function cannon(options: AutocannonOptions): Promise<AutocannonResult> {
  return new Promise((resolve, reject) => {
    autocannon(options, (err, result) => (err ? reject(err) : resolve(result)))
  })
}
