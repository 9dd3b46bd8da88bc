import type { Config } from '../../config'
import { listPosts } from '../../db/posts'
import type { PostWithAuthor } from '../../db/posts'
import { isBodyNotModified } from '../../http/conditional-get'
import { API_PREFIX, createRouter } from '../../router'
import type { AppRouteHandler } from '../../router'
import { postUrl } from '../../lib/publication'
import { atomXml } from './atom'
import type { AtomEntry } from './atom'
import * as routes from './feed.routes'

export const feed: AppRouteHandler<typeof routes.feed> = async (c) => {
  const { config } = c.var
  const now = new Date()
  // The page and the next scheduled publication in one round trip, as for the public list.
  const { rows, nextPublicationAt } = await listPosts(
    c.get('db'),
    { scope: { status: 'published' }, ordering: '-published_at' },
    { position: null, limit: routes.FEED_ENTRIES },
    now,
  )
  if (nextPublicationAt !== null) c.set('edgeCacheUntil', nextPublicationAt)
  const xml = atomXml({
    id: `${config.publicBaseUrl}/`,
    title: config.feedTitle,
    self: `${new URL(c.req.url).origin}${API_PREFIX}/feed`,
    home: `${config.publicBaseUrl}/`,
    entries: rows.slice(0, routes.FEED_ENTRIES).map((row) => feedEntry(row, config)),
  })
  if (await isBodyNotModified(c, xml)) return c.body(null, 304)
  return c.body(xml, 200, { 'Content-Type': routes.ATOM_CONTENT_TYPE })
}

/**
 * A post as an entry. Its id is a tag URI (RFC 4151) made of the blog's host, the day the post was
 * created and its id: permanent (a new slug or title changes nothing) and unique across blogs.
 * It is updated when edited, and never before it was published.
 */
function feedEntry(row: PostWithAuthor, config: Pick<Config, 'publicBaseUrl' | 'postUrlTemplate'>): AtomEntry {
  const published = row.publishedAt ?? row.createdAt
  // The hostname, not the host: RFC 4151's authority is a DNS name, where a port (`:8787`) has no place.
  const host = new URL(config.publicBaseUrl).hostname
  return {
    id: `tag:${host},${row.createdAt.toISOString().slice(0, 10)}:posts/${row.id}`,
    title: row.title,
    content: row.body,
    link: postUrl(config, row),
    author: row.authorUsername,
    published,
    updated: new Date(Math.max(row.updatedAt.getTime(), published.getTime())),
  }
}

export const feedRouter = createRouter().openapi(routes.feed, feed)
