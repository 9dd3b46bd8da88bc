// Types of the typed calls, derived from the paths openapi-typescript generated (./openapi.ts):
// client.GET('/api/v1/posts/{id}', { params: { path: { id: 1 } } }) checks the path, its
// parameters, the body and the answer, in the openapi-fetch style.
import type { paths } from './openapi.js'

export type HttpMethod = 'get' | 'put' | 'post' | 'delete' | 'patch'

/** The paths that have an operation for `M`. */
export type PathsWith<M extends HttpMethod> = {
  [P in keyof paths]: paths[P] extends { [K in M]: infer O } ? ([O] extends [never] ? never : P) : never
}[keyof paths]

export type OperationOf<P extends keyof paths, M extends HttpMethod> = paths[P] extends { [K in M]: infer O }
  ? O
  : never

type ParametersOf<O> = O extends { parameters: infer Parameters } ? Parameters : Record<string, never>
type Defined<T> = [T] extends [never] ? never : [T] extends [undefined] ? never : Exclude<T, undefined>

type PathParams<O> = Defined<ParametersOf<O> extends { path?: infer X } ? X : never>
type QueryParams<O> = Defined<ParametersOf<O> extends { query?: infer X } ? X : never>

/** `params`: required when the path has parameters, else optional; `query` only where the operation has one. */
type ParamsInit<O> = [PathParams<O>] extends [never]
  ? [QueryParams<O>] extends [never]
    ? { params?: never }
    : { params?: { query?: QueryParams<O> } }
  : [QueryParams<O>] extends [never]
    ? { params: { path: PathParams<O> } }
    : { params: { path: PathParams<O>; query?: QueryParams<O> } }

type JsonBody<O> = O extends { requestBody?: { content: { 'application/json': infer B } } } ? B : never

type BodyInit_<O> = [JsonBody<O>] extends [never]
  ? { body?: never }
  : O extends { requestBody: unknown }
    ? { body: JsonBody<O> }
    : { body?: JsonBody<O> }

export type RequestInitOf<O> = ParamsInit<O> &
  BodyInit_<O> & {
    headers?: Record<string, string>
    signal?: AbortSignal
  }

type SuccessStatus = 200 | 201 | 202 | 203 | 204 | 206

/** What a successful answer carries: its JSON, or undefined for a 204 or 304. */
export type SuccessData<O> = O extends { responses: infer R }
  ? {
      [S in keyof R]: S extends SuccessStatus
        ? R[S] extends { content: { 'application/json': infer D } }
          ? D
          : undefined
        : never
    }[keyof R]
  : never

/** RFC 9457 problem details, as every edgepress error is answered, with its stable `code`. */
export interface Problem {
  type: string
  title: string
  status: number
  detail?: string
  code: string
  request_id?: string
  [member: string]: unknown
}

export type FetchResult<T> =
  | { data: T; error?: undefined; response: Response }
  | { data?: undefined; error: Problem; response: Response | undefined }

/** The argument list of a typed call: the init may be left out when nothing in it is required. */
export type InitArgs<O> =
  Partial<RequestInitOf<O>> extends RequestInitOf<O> ? [init?: RequestInitOf<O>] : [init: RequestInitOf<O>]
