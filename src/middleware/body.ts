import { createMiddleware } from 'hono/factory'
import { matchedRoutes } from 'hono/route'
import { ApiError } from '../lib/api-error'
import { policyOf } from './route-policy'

const JSON_MEDIA_TYPE = /^application\/([\w.-]+\+)?json$/
export const FORM_MEDIA_TYPE = 'application/x-www-form-urlencoded'
export const MULTIPART_MEDIA_TYPE = 'multipart/form-data'

/**
 * Content negotiation for request bodies. JSON is accepted everywhere; a form body is accepted
 * only where the route declares `formBody` (the auth endpoints, docs/API.md precise point 6) and
 * is turned into the same JSON object, so routes validate one shape whatever the client sent.
 * Anything else → 415.
 */
export function negotiateBody() {
  return createMiddleware(async function negotiateBody(c, next) {
    const contentType = c.req.header('content-type')
    if (contentType === undefined || c.req.raw.body === null) return next()
    // Unknown routes and wrong methods answer 404/405 whatever the body is.
    if (!matchedRoutes(c).some((route) => route.method !== 'ALL')) return next()
    const mediaType = contentType.split(';')[0]!.trim().toLowerCase()
    const policy = policyOf(c)
    const acceptsForm = policy.formBody === true
    if (JSON_MEDIA_TYPE.test(mediaType)) {
      // An empty JSON body is an empty object: optional bodies (logout) pass, required fields are
      // named as missing (400 validation_failed) instead of "malformed JSON".
      const text = new TextDecoder().decode(await c.req.raw.clone().arrayBuffer())
      if (text.trim() === '') c.req.raw = withBody(c.req.raw, '{}', contentType)
      return next()
    }
    if (mediaType === FORM_MEDIA_TYPE && acceptsForm) {
      const text = new TextDecoder().decode(await c.req.raw.arrayBuffer())
      const fields = Object.fromEntries(new URLSearchParams(text))
      c.req.raw = withBody(c.req.raw, JSON.stringify(fields), 'application/json')
      return next()
    }
    if (mediaType === MULTIPART_MEDIA_TYPE && policy.multipartBody === true) {
      c.req.raw = withBody(c.req.raw, JSON.stringify(await multipartFields(c.req.raw)), 'application/json')
      return next()
    }
    throw new ApiError(
      415,
      'unsupported_media_type',
      acceptsForm
        ? 'Send the body as application/json or application/x-www-form-urlencoded.'
        : 'Send the body as application/json.',
    )
  })
}

/** The text fields of a multipart/form-data body (files are left out); malformed → 400. */
async function multipartFields(request: Request): Promise<Record<string, string>> {
  let form: FormData
  try {
    form = await request.formData()
  } catch {
    throw new ApiError(400, 'validation_failed', 'The request body is not valid multipart/form-data.', {
      errors: [{ path: '', message: 'is not valid multipart/form-data' }],
    })
  }
  const fields: Record<string, string> = {}
  for (const [name, value] of form) if (typeof value === 'string') fields[name] = value
  return fields
}

/** The request with another body: its content type set, its Content-Length dropped (the runtime counts the new one). */
function withBody(request: Request, body: string, contentType: string): Request {
  const headers = new Headers(request.headers)
  headers.set('content-type', contentType)
  headers.delete('content-length')
  return new Request(request.url, { method: request.method, headers, body })
}
