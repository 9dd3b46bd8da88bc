import { createRoute, z } from '@hono/zod-openapi'
import { routePolicy } from '../../middleware/route-policy'
import { ETAG_HEADER, problems } from '../../router'

export const ATOM_CONTENT_TYPE = 'application/atom+xml; charset=utf-8'

/** How many posts the feed carries: the newest published ones. */
export const FEED_ENTRIES = 20

export const feed = createRoute({
  method: 'get',
  path: '/feed',
  tags: ['Posts'],
  summary: 'Atom feed of the newest published posts (with ETag; If-None-Match → 304)',
  description:
    `The ${FEED_ENTRIES} newest published posts, newest publication first, for feed readers. ` +
    'Each entry links to the post on the blog (POST_URL_TEMPLATE) and carries its body as text. Drafts and ' +
    'scheduled posts appear only once published.',
  middleware: [routePolicy({ edgeCached: true })] as const,
  responses: {
    200: {
      content: { 'application/atom+xml': { schema: z.string().openapi({ description: 'An Atom 1.0 document' }) } },
      description: 'The feed',
      headers: ETAG_HEADER,
    },
    304: { description: 'Not modified', headers: ETAG_HEADER },
    ...problems(405, 503),
  },
})
