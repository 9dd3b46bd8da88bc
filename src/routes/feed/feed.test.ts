import { env } from 'cloudflare:workers'
import { XMLValidator } from 'fast-xml-parser'
import { atomParser, feedParser, isXmlChar, textOf } from '../../../test/atom-xml'
import type { XmlLink, XmlText } from '../../../test/atom-xml'
import { afterEach, describe, it, vi } from 'vitest'
import type { Env as WorkerEnv } from '../../config'
import { BASE_URL, api, apiWithEnv, expectProblem, mintToken, registerUser } from '../../../test/helpers'
import type { RegisteredUser } from '../../../test/helpers'

// GET /api/v1/feed (docs/API.md § The Atom feed): the 20 newest published posts as Atom 1.0.
//
// The feed is global, and other test files write posts at the same time. So that this file's
// posts are the newest ones, each test runs on a clock frozen minutes ahead of the real one (the
// worker runs in this isolate: a fake Date is its clock too), later than the test before it.
// Reads that do not test the edge cache send credentials, which bypass it; a test that reads
// anonymously ahead of time empties the cache afterwards (a write starts a new generation), so
// no copy made on the fake clock outlives it.

const ATOM = 'application/atom+xml; charset=utf-8'
const PUBLIC_BASE_URL = 'http://localhost:8787'

interface PostView {
  id: number
  title: string
  body: string
  slug: string
  url: string
  status: string
  published_at: string | null
  author: { id: number; username: string }
  created_at: string
  updated_at: string
}

interface Author {
  user: RegisteredUser
  token: string
}

let lastFrozenAt = 0
let purgeAfterTest: (() => Promise<void>) | undefined

afterEach(async () => {
  // While the fake clock still runs: the purging write's token was minted on it.
  if (purgeAfterTest !== undefined) await purgeAfterTest()
  purgeAfterTest = undefined
  vi.useRealTimers()
})

/** Freezes the clock ten minutes ahead, and past the previous test's clock. */
function freezeAhead() {
  const at = Math.max(Date.now() + 10 * 60_000, lastFrozenAt + 60_000)
  vi.useFakeTimers({ toFake: ['Date'] })
  vi.setSystemTime(at)
  let now = at
  lastFrozenAt = at
  return {
    get now() {
      return now
    },
    set(ms: number) {
      now = ms
      lastFrozenAt = Math.max(lastFrozenAt, ms)
      vi.setSystemTime(ms)
    },
    advance(ms: number) {
      this.set(now + ms)
    },
  }
}

/** A fresh user and an access token minted on the current (fake) clock. */
async function newAuthor(): Promise<Author> {
  const user = await registerUser()
  return { user, token: await mintToken({ sub: String(user.id) }) }
}

async function createPost(token: string, input: Record<string, string>): Promise<PostView> {
  const res = await api('POST', '/posts', { title: 'A title', body: 'A body', ...input }, token)
  if (res.status !== 201) throw new Error(`POST /posts failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostView
}

async function patchPost(token: string, id: number, input: Record<string, string>): Promise<PostView> {
  const res = await api('PATCH', `/posts/${id}`, input, token)
  if (res.status !== 200) throw new Error(`PATCH /posts/${id} failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostView
}

/** After this test, empty the edge cache with a write by `author` (on the test's clock). */
function purgeEdgeCacheAfterwards(author: Author): void {
  purgeAfterTest = async () => {
    const post = await createPost(author.token, { title: 'Purge', status: 'draft' })
    await api('DELETE', `/posts/${post.id}`, undefined, author.token)
  }
}

/** The feed, read past the edge cache (any credentials bypass it; the feed ignores them). */
async function freshFeed(token: string): Promise<string> {
  const res = await api('GET', '/feed', undefined, token)
  if (res.status !== 200) throw new Error(`GET /feed failed: ${res.status} ${await res.text()}`)
  return res.text()
}

interface FeedEntry {
  id: string
  title: string
  titleType: string | undefined
  link: XmlLink[]
  published: string
  updated: string
  author: string
  content: string
  contentType: string | undefined
}

interface Feed {
  xmlns: string
  id: string
  title: string
  updated: string
  links: XmlLink[]
  generator: string
  entries: FeedEntry[]
}

/** The feed, checked to be well-formed XML of XML characters only, as fast-xml-parser reads it. */
function parseFeed(xml: string): Feed {
  const validation = XMLValidator.validate(xml)
  if (validation !== true) throw new Error(`not well-formed: ${JSON.stringify(validation)}`)
  const bad = Array.from(xml).find((char) => !isXmlChar(char.codePointAt(0)!))
  if (bad !== undefined) throw new Error(`a character XML cannot carry: U+${bad.codePointAt(0)!.toString(16)}`)
  if (!xml.startsWith('<?xml version="1.0" encoding="utf-8"?>\n')) throw new Error('no XML declaration')
  type XmlNode = Record<string, XmlText> & { link: XmlLink[]; author: { name: XmlText } }
  const feed = (atomParser.parse(xml) as { feed: Record<string, unknown> }).feed as XmlNode & {
    '@xmlns': string
    entry?: XmlNode[]
  }
  return {
    xmlns: feed['@xmlns'],
    id: textOf(feed.id!),
    title: textOf(feed.title!),
    updated: textOf(feed.updated!),
    links: feed.link,
    generator: textOf(feed.generator!),
    entries: (feed.entry ?? []).map((entry) => ({
      id: textOf(entry.id!),
      title: textOf(entry.title!),
      titleType: typeof entry.title === 'string' ? undefined : entry.title!['@type'],
      link: entry.link,
      published: textOf(entry.published!),
      updated: textOf(entry.updated!),
      author: textOf(entry.author.name),
      content: textOf(entry.content!),
      contentType: typeof entry.content === 'string' ? undefined : entry.content!['@type'],
    })),
  }
}

/** The entry a post should have, on the default configuration. */
function expectedEntry(post: PostView): FeedEntry {
  const published = post.published_at!
  return {
    id: `tag:localhost,${post.created_at.slice(0, 10)}:posts/${post.id}`,
    title: post.title,
    titleType: 'text',
    link: [{ '@rel': 'alternate', '@type': 'text/html', '@href': post.url }],
    published,
    updated: Date.parse(post.updated_at) > Date.parse(published) ? post.updated_at : published,
    author: post.author.username,
    content: post.body,
    contentType: 'text',
  }
}

/** A word no other test's post contains. */
function uniqueWord(): string {
  return `w${crypto.randomUUID().replace(/-/g, '').slice(0, 14)}`
}

describe('GET /api/v1/feed', () => {
  it('answers an Atom document: its content type, a strong ETag, public, no-cache', async ({ expect }) => {
    const res = await api('GET', '/feed')
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe(ATOM)
    expect(res.headers.get('etag')).toMatch(/^"[^"]+"$/)
    expect(res.headers.get('cache-control')).toBe('public, no-cache')
    expect(res.headers.has('x-edge-cache-expires')).toBe(false)
    const feed = parseFeed(await res.text())
    expect(feed.xmlns).toBe('http://www.w3.org/2005/Atom')
  })

  it('carries the feed metadata: id, title, updated (its newest entry’s), self and alternate links', async ({
    expect,
  }) => {
    freezeAhead()
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Newest ${uniqueWord()}` })
    const feed = parseFeed(await freshFeed(token))
    expect(feed).toMatchObject({
      id: `${PUBLIC_BASE_URL}/`,
      title: 'edgepress',
      generator: 'edgepress',
      updated: post.updated_at,
    })
    expect(feed.links).toEqual([
      { '@rel': 'self', '@type': 'application/atom+xml', '@href': `${BASE_URL}/api/v1/feed` },
      { '@rel': 'alternate', '@type': 'text/html', '@href': `${PUBLIC_BASE_URL}/` },
    ])
  })

  it('gives each post an entry: a tag URI id, title, link to its url, published, updated, author, text content', async ({
    expect,
  }) => {
    freezeAhead()
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Entry ${uniqueWord()}`, body: 'The body,\nas plain text.' })
    const [first] = parseFeed(await freshFeed(token)).entries
    expect(first).toEqual(expectedEntry(post))
    // RFC 4151: tag:<DNS name>,<date>:<specific>, the name without the port of PUBLIC_BASE_URL.
    expect(first!.id).toMatch(/^tag:[a-z0-9.-]+,\d{4}-\d{2}-\d{2}:posts\/\d+$/)
    expect(first!.link[0]!['@href']).toBe(`${PUBLIC_BASE_URL}/posts/${post.slug}`)
  })

  it('lists the 20 newest published posts, newest publication first, and no draft or scheduled post', async ({
    expect,
  }) => {
    const clock = freezeAhead()
    const { token } = await newAuthor()
    const published: PostView[] = []
    for (let i = 0; i < 21; i++) {
      published.push(await createPost(token, { title: `Post ${i}` }))
      clock.advance(1_000)
    }
    // Back-dated: published long ago, so not among the newest, though created last.
    await createPost(token, { title: 'Imported', published_at: '2019-01-01T00:00:00.000Z' })
    const draft = await createPost(token, { title: 'Draft', status: 'draft' })
    const scheduled = await createPost(token, {
      title: 'Scheduled',
      status: 'scheduled',
      published_at: new Date(clock.now + 60_000).toISOString(),
    })
    const feed = parseFeed(await freshFeed(token))
    expect(feed.entries).toHaveLength(20)
    expect(feed.entries).toEqual(published.slice(1).reverse().map(expectedEntry))
    const ids = feed.entries.map((entry) => entry.id)
    for (const hidden of [draft, scheduled]) expect(ids.join(' ')).not.toMatch(new RegExp(`:posts/${hidden.id}$`))
  })

  it('follows edits: updated moves, published and the id stay, the link follows a new slug', async ({ expect }) => {
    const clock = freezeAhead()
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Before ${uniqueWord()}` })
    clock.advance(5_000)
    const edited = await patchPost(token, post.id, { title: 'After', slug: `after-${uniqueWord()}` })
    const [first] = parseFeed(await freshFeed(token)).entries
    expect(first).toEqual(expectedEntry(edited))
    expect(first).toMatchObject({
      id: expectedEntry(post).id,
      title: 'After',
      published: post.published_at,
      updated: new Date(clock.now).toISOString(),
    })
    expect(first!.link[0]!['@href']).toBe(`${PUBLIC_BASE_URL}/posts/${edited.slug}`)
  })

  it('never dates an entry updated before it was published (a post written ahead of its time)', async ({ expect }) => {
    const clock = freezeAhead()
    const { token } = await newAuthor()
    const at = clock.now + 30_000
    const post = await createPost(token, {
      title: `Scheduled ${uniqueWord()}`,
      status: 'scheduled',
      published_at: new Date(at).toISOString(),
    })
    expect(Date.parse(post.updated_at)).toBeLessThan(at)
    clock.set(at)
    const token2 = await mintToken({ sub: String(post.author.id) })
    const [first] = parseFeed(await freshFeed(token2)).entries
    expect(first).toMatchObject({
      id: expectedEntry(post).id,
      published: post.published_at,
      updated: post.published_at,
    })
  })

  it('drops a post sent back to draft', async ({ expect }) => {
    freezeAhead()
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Unpublished ${uniqueWord()}` })
    expect(parseFeed(await freshFeed(token)).entries[0]!.id).toBe(expectedEntry(post).id)
    await patchPost(token, post.id, { status: 'draft' })
    const ids = parseFeed(await freshFeed(token)).entries.map((entry) => entry.id)
    expect(ids).not.toContain(expectedEntry(post).id)
  })

  it.for([
    ['markup', 'a < b && c > d </title><title>'],
    ['entities', '&amp; &lt; &#60; &nbsp; &bogus;'],
    ['quotes', `"double" 'single' “curly”`],
    ['emoji', '👩‍💻 Hello 🎉🇫🇷 👍🏽'],
    ['control characters', 'bell\u0007 escape\u001b nul\u0000 del-ok'],
  ] as const)('keeps a title with %s readable, and the document well-formed', async ([, title], { expect }) => {
    freezeAhead()
    const { token } = await newAuthor()
    const post = await createPost(token, { title, body: `${title}\nbody` })
    expect(post.title).toBe(title)
    const xml = await freshFeed(token)
    // What XML cannot carry is left out; the rest reads back exactly.
    const carried = (text: string) =>
      Array.from(text)
        .filter((char) => isXmlChar(char.codePointAt(0)!))
        .join('')
    const [first] = parseFeed(xml).entries
    expect(first).toMatchObject({
      id: expectedEntry(post).id,
      title: carried(title),
      content: carried(`${title}\nbody`),
    })
  })

  it('reads in a feed reader (@rowanmanning/feed-parser)', async ({ expect }) => {
    freezeAhead()
    const { token } = await newAuthor()
    const title = `Reader <test> & 🎉 ${uniqueWord()}\u0001`
    const post = await createPost(token, { title, body: 'Read me' })
    const parsed = feedParser.parseFeed(await freshFeed(token))
    expect(parsed.meta).toEqual({ type: 'atom', version: '1.0' })
    expect(parsed.title).toBe('edgepress')
    expect(parsed.self).toBe(`${BASE_URL}/api/v1/feed`)
    expect(parsed.url).toBe(`${PUBLIC_BASE_URL}/`)
    expect(parsed.updated?.toISOString()).toBe(post.updated_at)
    const [first] = parsed.items
    expect(first).toMatchObject({
      id: expectedEntry(post).id,
      title: title.replace('\u0001', ''),
      url: post.url,
      content: 'Read me',
    })
    expect(first!.published?.toISOString()).toBe(post.published_at)
    expect(first!.authors.map((author) => author.name)).toEqual([post.author.username])
  })

  it('answers 405 method_not_allowed to POST', async () => {
    await expectProblem(await api('POST', '/feed', {}), 405, 'method_not_allowed')
  })
})

describe('GET /api/v1/feed: conditional requests', () => {
  it('answers 304 with no body to If-None-Match holding its ETag (or *), 200 to another', async ({ expect }) => {
    freezeAhead()
    const { token } = await newAuthor()
    await createPost(token, { title: `Conditional ${uniqueWord()}` })
    const first = await api('GET', '/feed', undefined, token)
    const etag = first.headers.get('etag')!
    await first.body?.cancel()
    for (const header of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const res = await api('GET', '/feed', undefined, token, { 'if-none-match': header })
      expect(res.status, header).toBe(304)
      expect(await res.text()).toBe('')
      expect(res.headers.get('etag')).toBe(etag)
    }
    const other = await api('GET', '/feed', undefined, token, { 'if-none-match': '"other"' })
    expect(other.status).toBe(200)
    expect(other.headers.get('content-type')).toBe(ATOM)
    await other.body?.cancel()
  })

  it('changes its ETag when a post is published or edited', async ({ expect }) => {
    const clock = freezeAhead()
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Tagged ${uniqueWord()}` })
    const etagOf = async () => {
      const res = await api('GET', '/feed', undefined, token)
      await res.body?.cancel()
      return res.headers.get('etag')!
    }
    const before = await etagOf()
    expect(await etagOf()).toBe(before)
    clock.advance(1_000)
    await patchPost(token, post.id, { body: 'edited' })
    const edited = await etagOf()
    expect(edited).not.toBe(before)
    const stale = await api('GET', '/feed', undefined, token, { 'if-none-match': before })
    expect(stale.status).toBe(200)
    await stale.body?.cancel()
    clock.advance(1_000)
    await createPost(token, { title: 'Another' })
    expect(await etagOf()).not.toBe(edited)
  })
})

describe('GET /api/v1/feed: the edge cache and a scheduled post', () => {
  it('is cached, but not past the next publication: the post is in the feed from its time on', async ({ expect }) => {
    const clock = freezeAhead()
    const author = await newAuthor()
    purgeEdgeCacheAfterwards(author)
    const published = await createPost(author.token, { title: `Out ${uniqueWord()}` })
    const at = clock.now + 5_000
    const scheduled = await createPost(author.token, {
      title: `Soon ${uniqueWord()}`,
      status: 'scheduled',
      published_at: new Date(at).toISOString(),
    })
    const anonymous = async () => {
      const res = await api('GET', '/feed')
      expect(res.status).toBe(200)
      expect(res.headers.has('x-edge-cache-expires')).toBe(false)
      const ids = parseFeed(await res.text()).entries.map((entry) => entry.id)
      return { cache: res.headers.get('x-edge-cache'), first: ids[0], ids }
    }

    expect(await anonymous()).toMatchObject({ cache: 'MISS', first: expectedEntry(published).id })
    expect(await anonymous()).toMatchObject({ cache: 'HIT', first: expectedEntry(published).id })
    clock.set(at - 1)
    // Not out yet, whether this is the cached copy or a fresh one (the copy expires at the next
    // publication of any post, which other tests' posts may bring forward).
    expect((await anonymous()).ids).not.toContain(expectedEntry(scheduled).id)
    clock.set(at)
    expect(await anonymous()).toMatchObject({ cache: 'MISS', first: expectedEntry(scheduled).id })
    const hit = await anonymous()
    expect(hit).toMatchObject({ cache: 'HIT', first: expectedEntry(scheduled).id })
    expect(hit.ids[1]).toBe(expectedEntry(published).id)
  })
})

describe('GET /api/v1/feed: configuration', () => {
  // Read with a token, which bypasses the edge cache: its key is the request, not the configuration.
  const custom: WorkerEnv = {
    ...env,
    MAIL_TRANSPORT: undefined,
    PUBLIC_BASE_URL: 'https://blog.example.com:8443/',
    FEED_TITLE: 'My <Blog> & Co',
    POST_URL_TEMPLATE: '{PUBLIC_BASE_URL}/{id}/{slug}',
  }

  it('takes its title from FEED_TITLE, its id and home from PUBLIC_BASE_URL, its links from POST_URL_TEMPLATE', async ({
    expect,
  }) => {
    freezeAhead()
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Configured ${uniqueWord()}` })
    const res = await apiWithEnv(custom, 'GET', '/feed', undefined, token)
    expect(res.status).toBe(200)
    const feed = parseFeed(await res.text())
    expect(feed).toMatchObject({ id: 'https://blog.example.com:8443/', title: 'My <Blog> & Co' })
    expect(feed.links[1]).toEqual({
      '@rel': 'alternate',
      '@type': 'text/html',
      '@href': 'https://blog.example.com:8443/',
    })
    expect(feed.entries[0]).toMatchObject({
      id: `tag:blog.example.com,${post.created_at.slice(0, 10)}:posts/${post.id}`,
      link: [
        { '@rel': 'alternate', '@type': 'text/html', '@href': `https://blog.example.com:8443/${post.id}/${post.slug}` },
      ],
    })
  })
})
