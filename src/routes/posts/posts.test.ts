import { env } from 'cloudflare:workers'
import { describe, it } from 'vitest'
import {
  BASE_URL,
  api,
  expectProblem,
  login,
  mintToken,
  registerAdmin,
  registerAndLogin,
  registerUser,
  uniqueName,
} from '../../../test/helpers'
import type { RegisteredUser } from '../../../test/helpers'
import type { Page } from '../pagination'
import type { Post } from './posts.routes'

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const POST_KEYS = ['author', 'body', 'created_at', 'id', 'published_at', 'slug', 'status', 'title', 'updated_at', 'url']

/** A post as the API answers it: the route's own schema. */
type PostView = Post

type PostPage = Page<PostView>

/** A word no other test's post contains: letters and digits only, so FTS5 keeps it one token. */
function uniqueWord(): string {
  return `w${crypto.randomUUID().replace(/-/g, '').slice(0, 14)}`
}

/**
 * A fresh user and an access token for it. The token is minted with the configured key, which the
 * API accepts like one it issued (docs/API.md precise point 2); it saves a password check per test.
 */
async function newAuthor(): Promise<{ user: RegisteredUser; tokens: { access_token: string } }> {
  const user = await registerUser()
  return { user, tokens: { access_token: await mintToken({ sub: String(user.id) }) } }
}

async function createPost(token: string, input: { title: string; body: string }): Promise<PostView> {
  const res = await api('POST', '/posts', input, token)
  if (res.status !== 201) throw new Error(`POST /posts failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostView
}

/** Creates `count` posts one after another (so each is at least as new as the one before). */
async function createPosts(token: string, count: number, word = uniqueWord()): Promise<PostView[]> {
  const created: PostView[] = []
  for (let i = 0; i < count; i++)
    created.push(await createPost(token, { title: `${word} post ${i}`, body: `Body ${i} of ${word}` }))
  return created
}

/** Path and query of an absolute `next`/`previous` URL, checked to be on this API's origin. */
function pathOf(url: string): string {
  if (!url.startsWith(`${BASE_URL}/api/v1/`)) throw new Error(`not an absolute API URL: ${url}`)
  return url.slice(BASE_URL.length)
}

async function getPage(path: string): Promise<PostPage> {
  const res = await api('GET', path)
  if (res.status !== 200) throw new Error(`GET ${path} failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostPage
}

/** Every page from `path` on, following `next` until it is null. */
async function walk(path: string): Promise<PostPage[]> {
  const pages = [await getPage(path)]
  for (let next = pages[0]!.next; next !== null; next = pages[pages.length - 1]!.next) {
    if (pages.length > 50) throw new Error('pagination does not end')
    pages.push(await getPage(pathOf(next)))
  }
  return pages
}

const idsOf = (posts: PostView[]): number[] => posts.map((post) => post.id)
const newestFirst = (posts: PostView[]): number[] => idsOf(posts).reverse()

/** Moves a post's timestamps into the past in D1, so a later write gets a later time without waiting. */
async function backdatePost(id: number, ms: number): Promise<void> {
  await env.DB.prepare('UPDATE posts SET created_at = created_at - ?1, updated_at = updated_at - ?1 WHERE id = ?2')
    .bind(ms, id)
    .run()
}

function cursorOf(url: string): string {
  const cursor = new URL(url).searchParams.get('cursor')
  if (cursor === null) throw new Error(`no cursor in ${url}`)
  return cursor
}

/** Replaces the character at `index` with a different base64url character. */
function flipCharAt(text: string, index: number): string {
  const replacement = text[index] === 'A' ? 'B' : 'A'
  return `${text.slice(0, index)}${replacement}${text.slice(index + 1)}`
}

describe('POST /api/v1/posts', () => {
  it('creates a post: 201, Location and the post view', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const input = { title: `Hello ${uniqueName('title')}`, body: 'First post at the edge.' }
    const res = await api('POST', '/posts', input, tokens.access_token)
    expect(res.status).toBe(201)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    const post = (await res.json()) as PostView
    expect(Object.keys(post).sort()).toEqual(POST_KEYS)
    expect(post).toMatchObject({ ...input, author: { id: user.id, username: user.username } })
    expect(Object.keys(post.author).sort()).toEqual(['id', 'username'])
    expect(post.created_at).toMatch(ISO_UTC)
    expect(post.updated_at).toBe(post.created_at)
    // Published at once, as before drafts existed; its URL on the blog from POST_URL_TEMPLATE.
    expect(post).toMatchObject({ status: 'published', published_at: post.created_at })
    expect(post.slug).toMatch(/^hello-title-[0-9]+-[0-9a-f]+$/)
    expect(post.url).toBe(`http://localhost:8787/posts/${post.slug}`)
    expect(res.headers.get('location')).toBe(`/api/v1/posts/${post.id}`)

    const fetched = await api('GET', res.headers.get('location')!)
    expect(fetched.status).toBe(200)
    expect(await fetched.json()).toEqual(post)
  })

  it('answers 401 not_authenticated without a token', async ({ expect }) => {
    const res = await api('POST', '/posts', { title: 'No token', body: 'x' })
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="api"')
    await expectProblem(res, 401, 'not_authenticated')
  })

  it.for([
    ['a missing title', { body: 'no title' }, 'title'],
    ['an empty title', { title: '', body: 'empty title' }, 'title'],
    ['a 201-character title', { title: 't'.repeat(201), body: 'long title' }, 'title'],
    ['a non-string title', { title: 42, body: 'numeric title' }, 'title'],
    ['a missing body', { title: 'no body' }, 'body'],
    ['a 50 001-character body', { title: 'long body', body: 'b'.repeat(50_001) }, 'body'],
  ] as const)('answers 400 validation_failed for %s', async ([, input, path], { expect }) => {
    const { tokens } = await newAuthor()
    const problem = await expectProblem(
      await api('POST', '/posts', input, tokens.access_token),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((error) => error.path)).toContain(path)
  })

  it('accepts the limits: a 200-character title and a 50 000-character body', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const input = { title: 't'.repeat(200), body: 'b'.repeat(50_000) }
    const res = await api('POST', '/posts', input, tokens.access_token)
    expect(res.status).toBe(201)
    const post = (await res.json()) as PostView
    expect(post.title).toBe(input.title)
    expect(post.body).toBe(input.body)
  })

  it('counts the title in characters, not UTF-16 code units: 200 emoji pass, 201 do not', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const accepted = await api('POST', '/posts', { title: '😀'.repeat(200), body: 'x' }, tokens.access_token)
    expect(accepted.status).toBe(201)
    expect(((await accepted.json()) as PostView).title).toBe('😀'.repeat(200))
    const refused = await api('POST', '/posts', { title: '😀'.repeat(201), body: 'x' }, tokens.access_token)
    const problem = await expectProblem(refused, 400, 'validation_failed')
    expect(problem.errors?.map((error) => error.path)).toContain('title')
  })

  it.for([
    ['text/plain', 'title=hello'],
    ['application/x-www-form-urlencoded', 'title=hello&body=world'],
  ] as const)('answers 415 unsupported_media_type to a %s body', async ([contentType, body]) => {
    const { tokens } = await newAuthor()
    const res = await api('POST', '/posts', body, tokens.access_token, { 'content-type': contentType })
    await expectProblem(res, 415, 'unsupported_media_type')
  })

  it('answers 413 payload_too_large to a body over 64 KiB', async () => {
    const { tokens } = await newAuthor()
    const res = await api('POST', '/posts', { title: 'huge', body: 'b'.repeat(70_000) }, tokens.access_token)
    await expectProblem(res, 413, 'payload_too_large')
  })

  it('answers 400 validation_failed to malformed JSON', async () => {
    const { tokens } = await newAuthor()
    await expectProblem(await api('POST', '/posts', '{"title": "x",', tokens.access_token), 400, 'validation_failed')
  })

  it.for([
    ['SQL metacharacters', "'; DROP TABLE posts; --", 'Robert\'); DELETE FROM users WHERE 1=1; -- " OR "1"="1'],
    ['LIKE wildcards and escapes', '100% of _all_ \\ posts', "C:\\path\\to\\file %_% \\% \\_ \\\\ ESCAPE '\\'"],
    ['quotes', `"double" 'single' \`back\` “curly” ‘curly’`, `He said "it's \\"fine\\""`],
    ['emoji', '👩‍💻 Hello 🎉🇫🇷', 'Family: 👨‍👩‍👧‍👦, skin tone: 👍🏽, keycap: 1️⃣'],
    ['right-to-left text', 'مرحبا بالعالم', 'שלום עולם \u200f mixed LTR and RTL \u202eevil\u202c'],
    [
      'combining marks (not normalised)',
      'Cafe\u0301 vs Café',
      'Z\u0351\u0313a\u0300\u0301l\u0336g\u0334o\u0335 ñ vs n\u0303',
    ],
    ['control characters other than NUL', 'tab\there', 'line\nbreak\r\nand \u0001\u001f\u007f and \u2028\u2029'],
  ] as const)('round-trips %s exactly in title and body', async ([, title, body], { expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title, body })
    expect(created.title).toBe(title)
    expect(created.body).toBe(body)

    const fetched = (await (await api('GET', `/posts/${created.id}`)).json()) as PostView
    expect(fetched.title).toBe(title)
    expect(fetched.body).toBe(body)

    const listed = await getPage(`/posts?author=${created.author.id}`)
    expect(listed.results).toEqual([created])
  })

  it('lands all of 100 concurrent creations by one user', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const word = uniqueWord()
    const responses = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        api('POST', '/posts', { title: `${word} ${i}`, body: `concurrent ${i}` }, tokens.access_token),
      ),
    )
    expect(responses.map((res) => res.status)).toEqual(Array(100).fill(201))
    const created = (await Promise.all(responses.map((res) => res.json()))) as PostView[]
    const ids = new Set(idsOf(created))
    expect(ids.size).toBe(100)

    const listed = await getPage(`/posts?author=${user.id}&limit=100`)
    expect(listed.results).toHaveLength(100)
    expect(new Set(idsOf(listed.results))).toEqual(ids)
    expect(listed.next).toBeNull()
    expect(new Set(listed.results.map((post) => post.title))).toEqual(new Set(created.map((post) => post.title)))
  })
})

describe('GET /api/v1/posts/{id}', () => {
  it('returns the post with a strong ETag and Cache-Control', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Cached', body: 'Etag me' })
    const res = await api('GET', `/posts/${created.id}`)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual(created)
    const etag = res.headers.get('etag')
    expect(etag).toMatch(/^"[^"]+"$/)
    expect(res.headers.get('cache-control')).toMatch(/no-cache|max-age=0/)

    const again = await api('GET', `/posts/${created.id}`)
    expect(again.headers.get('etag')).toBe(etag)
  })

  it('answers 304 with no body and the ETag when If-None-Match holds it', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Conditional', body: 'GET' })
    const etag = (await api('GET', `/posts/${created.id}`)).headers.get('etag')!
    const res = await api('GET', `/posts/${created.id}`, undefined, undefined, { 'if-none-match': etag })
    expect(res.status).toBe(304)
    expect(await res.text()).toBe('')
    expect(res.headers.get('etag')).toBe(etag)
  })

  it.for([
    ['the weak form', (etag: string) => `W/${etag}`],
    ['a list holding it', (etag: string) => `"not-it", ${etag} , W/"also-not"`],
    ['*', () => '*'],
  ] as const)('answers 304 when If-None-Match is %s', async ([, header], { expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Conditional', body: 'variants' })
    const etag = (await api('GET', `/posts/${created.id}`)).headers.get('etag')!
    const res = await api('GET', `/posts/${created.id}`, undefined, undefined, { 'if-none-match': header(etag) })
    expect(res.status).toBe(304)
    expect(await res.text()).toBe('')
    expect(res.headers.get('etag')).toBe(etag)
  })

  it('answers 200 when If-None-Match holds other tags', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Conditional', body: 'miss' })
    const res = await api('GET', `/posts/${created.id}`, undefined, undefined, {
      'if-none-match': '"other", W/"another"',
    })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual(created)
  })

  it('serves the new content and a new ETag after a write (no stale read)', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Before', body: 'old' })
    const oldEtag = (await api('GET', `/posts/${created.id}`)).headers.get('etag')!

    const patched = await api('PATCH', `/posts/${created.id}`, { title: 'After' }, tokens.access_token)
    expect(patched.status).toBe(200)

    const res = await api('GET', `/posts/${created.id}`, undefined, undefined, { 'if-none-match': oldEtag })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: created.id, title: 'After', body: 'old' })
    const newEtag = res.headers.get('etag')
    expect(newEtag).toMatch(/^"[^"]+"$/)
    expect(newEtag).not.toBe(oldEtag)

    const revalidated = await api('GET', `/posts/${created.id}`, undefined, undefined, { 'if-none-match': newEtag! })
    expect(revalidated.status).toBe(304)
  })

  it('answers 405 method_not_allowed with Allow to POST', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Method', body: 'not allowed' })
    const res = await api('POST', `/posts/${created.id}`, { title: 'x', body: 'y' }, tokens.access_token)
    expect(res.headers.get('allow')?.split(/,\s*/)).toEqual(expect.arrayContaining(['DELETE', 'GET', 'PATCH', 'PUT']))
    expect(res.headers.get('allow')).not.toContain('POST')
    await expectProblem(res, 405, 'method_not_allowed')
  })

  it.for(['987654321', 'abc', '0', '-1', '1.5', '99999999999999999999'])(
    'answers 404 not_found for the id %j',
    async (id) => {
      await expectProblem(await api('GET', `/posts/${id}`), 404, 'not_found')
    },
  )

  it('answers 404 for a deleted post, also to If-None-Match: *', async () => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Gone', body: 'soon' })
    await api('DELETE', `/posts/${created.id}`, undefined, tokens.access_token)
    await expectProblem(
      await api('GET', `/posts/${created.id}`, undefined, undefined, { 'if-none-match': '*' }),
      404,
      'not_found',
    )
  })
})

describe('PUT and PATCH /api/v1/posts/{id}', () => {
  it.for([
    ['PUT', { title: 'Replaced title', body: 'Replaced body' }, { title: 'Replaced title', body: 'Replaced body' }],
    ['PATCH', { title: 'Patched title' }, { title: 'Patched title', body: 'Original body' }],
    ['PATCH', { body: 'Patched body' }, { title: 'Original title', body: 'Patched body' }],
  ] as const)(
    '%s by the author → 200 %j; updated_at moves, created_at does not',
    async ([method, input, expected], { expect }) => {
      const { user, tokens } = await newAuthor()
      const created = await createPost(tokens.access_token, { title: 'Original title', body: 'Original body' })
      await backdatePost(created.id, 60_000)
      const before = (await (await api('GET', `/posts/${created.id}`)).json()) as PostView

      const res = await api(method, `/posts/${created.id}`, input, tokens.access_token)
      expect(res.status).toBe(200)
      const updated = (await res.json()) as PostView
      expect(updated).toMatchObject({ id: created.id, ...expected, author: { id: user.id, username: user.username } })
      expect(updated.created_at).toBe(before.created_at)
      expect(updated.updated_at).toMatch(ISO_UTC)
      expect(Date.parse(updated.updated_at)).toBeGreaterThan(Date.parse(before.updated_at))
      expect(await (await api('GET', `/posts/${created.id}`)).json()).toEqual(updated)
    },
  )

  it.for([
    ['PUT without body', 'PUT', { title: 'only a title' }, 'body'],
    ['PUT without title', 'PUT', { body: 'only a body' }, 'title'],
    ['PUT with an empty title', 'PUT', { title: '', body: 'x' }, 'title'],
    ['PATCH with a 201-character title', 'PATCH', { title: 't'.repeat(201) }, 'title'],
    ['PATCH with a 50 001-character body', 'PATCH', { body: 'b'.repeat(50_001) }, 'body'],
  ] as const)('answers 400 validation_failed to %s', async ([, method, input, path], { expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Keep', body: 'me' })
    const problem = await expectProblem(
      await api(method, `/posts/${created.id}`, input, tokens.access_token),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((error) => error.path)).toContain(path)
    expect(await (await api('GET', `/posts/${created.id}`)).json()).toEqual(created)
  })

  it('answers 400 validation_failed to PATCH with {}', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Keep', body: 'me' })
    const problem = await expectProblem(
      await api('PATCH', `/posts/${created.id}`, {}, tokens.access_token),
      400,
      'validation_failed',
    )
    expect(problem.errors?.length).toBeGreaterThan(0)
  })

  it.for(['PUT', 'PATCH'] as const)('%s by another user → 403 forbidden and no change', async (method, { expect }) => {
    const [author, other] = await Promise.all([newAuthor(), newAuthor()])
    const created = await createPost(author.tokens.access_token, { title: 'Mine', body: 'hands off' })
    const res = await api(
      method,
      `/posts/${created.id}`,
      { title: 'Yours now', body: 'taken' },
      other.tokens.access_token,
    )
    await expectProblem(res, 403, 'forbidden')
    expect(await (await api('GET', `/posts/${created.id}`)).json()).toEqual(created)
  })

  it.for(['PUT', 'PATCH'] as const)('%s by an admin → 200, author unchanged', async (method, { expect }) => {
    const [author, admin] = await Promise.all([newAuthor(), registerAdmin()])
    const created = await createPost(author.tokens.access_token, { title: 'Moderate me', body: 'spam' })
    const res = await api(
      method,
      `/posts/${created.id}`,
      { title: 'Moderated', body: '[removed]' },
      admin.tokens.access_token,
    )
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({
      id: created.id,
      title: 'Moderated',
      body: '[removed]',
      author: { id: author.user.id, username: author.user.username },
    })
  })

  it.for(['PUT', 'PATCH'] as const)('%s of a missing post → 404 not_found', async (method) => {
    const { tokens } = await newAuthor()
    await expectProblem(
      await api(method, '/posts/987654321', { title: 'x', body: 'y' }, tokens.access_token),
      404,
      'not_found',
    )
    await expectProblem(
      await api(method, '/posts/abc', { title: 'x', body: 'y' }, tokens.access_token),
      404,
      'not_found',
    )
  })

  it.for(['PUT', 'PATCH'] as const)('%s without a token → 401 not_authenticated', async (method, { expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Keep', body: 'me' })
    await expectProblem(await api(method, `/posts/${created.id}`, { title: 'x', body: 'y' }), 401, 'not_authenticated')
    expect(await (await api('GET', `/posts/${created.id}`)).json()).toEqual(created)
  })

  it.for(['PUT', 'PATCH'] as const)('%s with a text/plain body → 415', async (method) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Keep', body: 'me' })
    const res = await api(method, `/posts/${created.id}`, 'title=x', tokens.access_token, {
      'content-type': 'text/plain',
    })
    await expectProblem(res, 415, 'unsupported_media_type')
  })
})

describe('DELETE /api/v1/posts/{id}', () => {
  it('by the author → 204, then GET → 404', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Delete me', body: 'bye' })
    const res = await api('DELETE', `/posts/${created.id}`, undefined, tokens.access_token)
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
    await expectProblem(await api('GET', `/posts/${created.id}`), 404, 'not_found')
    await expectProblem(await api('DELETE', `/posts/${created.id}`, undefined, tokens.access_token), 404, 'not_found')
    expect((await getPage(`/posts?author=${created.author.id}`)).results).toEqual([])
  })

  it('by another user → 403 forbidden, and the post stays', async ({ expect }) => {
    const [author, other] = await Promise.all([newAuthor(), newAuthor()])
    const created = await createPost(author.tokens.access_token, { title: 'Mine', body: 'stays' })
    await expectProblem(
      await api('DELETE', `/posts/${created.id}`, undefined, other.tokens.access_token),
      403,
      'forbidden',
    )
    expect((await api('GET', `/posts/${created.id}`)).status).toBe(200)
  })

  it('by an admin → 204', async ({ expect }) => {
    const [author, admin] = await Promise.all([newAuthor(), registerAdmin()])
    const created = await createPost(author.tokens.access_token, { title: 'Spam', body: 'remove' })
    expect((await api('DELETE', `/posts/${created.id}`, undefined, admin.tokens.access_token)).status).toBe(204)
    await expectProblem(await api('GET', `/posts/${created.id}`), 404, 'not_found')
  })

  it('without a token → 401; a missing post → 404', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const created = await createPost(tokens.access_token, { title: 'Keep', body: 'me' })
    await expectProblem(await api('DELETE', `/posts/${created.id}`), 401, 'not_authenticated')
    await expectProblem(await api('DELETE', '/posts/987654321', undefined, tokens.access_token), 404, 'not_found')
    expect((await api('GET', `/posts/${created.id}`)).status).toBe(200)
  })
})

describe('GET /api/v1/posts (cursor pagination)', () => {
  it('walks 45 posts in 3 pages (20, 20, 5), newest first, each exactly once', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const created = await createPosts(tokens.access_token, 45)

    const first = await api('GET', `/posts?author=${user.id}&limit=20`)
    expect(first.status).toBe(200)
    expect(first.headers.get('cache-control')).toMatch(/no-cache|max-age=0/)
    const pages = await walk(`/posts?author=${user.id}&limit=20`)
    expect(pages.map((page) => page.results.length)).toEqual([20, 20, 5])
    expect(pages[0]!.previous).toBeNull()
    expect(pages[1]!.previous).not.toBeNull()
    expect(pages[2]!.next).toBeNull()
    expect(pages.flatMap((page) => idsOf(page.results))).toEqual(newestFirst(created))
    for (const page of pages.slice(0, 2)) {
      const next = new URL(page.next!)
      expect(next.origin).toBe(BASE_URL)
      expect(next.pathname).toBe('/api/v1/posts')
      expect(next.searchParams.get('limit')).toBe('20')
      expect(next.searchParams.get('author')).toBe(String(user.id))
    }
  })

  it('following previous from page 3 returns page 2 exactly, and from there page 1', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    await createPosts(tokens.access_token, 45)
    const [page1, page2, page3] = await walk(`/posts?author=${user.id}&limit=20`)

    const back2 = await getPage(pathOf(page3!.previous!))
    expect(idsOf(back2.results)).toEqual(idsOf(page2!.results))
    expect(back2.next).not.toBeNull()
    expect(back2.previous).not.toBeNull()
    expect(idsOf((await getPage(pathOf(back2.next!))).results)).toEqual(idsOf(page3!.results))

    const back1 = await getPage(pathOf(back2.previous!))
    expect(idsOf(back1.results)).toEqual(idsOf(page1!.results))
    expect(back1.previous).toBeNull()
    expect(back1.next).not.toBeNull()
  })

  it('is stable under inserts: a post created mid-walk causes no duplicate and no skip', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const created = await createPosts(tokens.access_token, 45)
    const page1 = await getPage(`/posts?author=${user.id}&limit=20`)
    const inserted = await createPost(tokens.access_token, { title: 'Inserted mid-walk', body: 'late' })

    const seen = [...idsOf(page1.results)]
    for (let next = page1.next; next !== null; ) {
      const page = await getPage(pathOf(next))
      seen.push(...idsOf(page.results))
      next = page.next
    }
    expect(new Set(seen).size).toBe(seen.length)
    expect(seen.filter((id) => id !== inserted.id)).toEqual(newestFirst(created))
    expect(idsOf((await getPage(`/posts?author=${user.id}&limit=1`)).results)).toEqual([inserted.id])
  })

  it('is stable under inserts oldest first too: the new post comes once, at the end', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const created = await createPosts(tokens.access_token, 5)
    const page1 = await getPage(`/posts?author=${user.id}&ordering=created_at&limit=2`)
    const inserted = await createPost(tokens.access_token, { title: 'Inserted mid-walk', body: 'late' })
    const rest = await walk(pathOf(page1.next!))
    const seen = [...idsOf(page1.results), ...rest.flatMap((page) => idsOf(page.results))]
    expect(seen).toEqual([...idsOf(created), inserted.id])
  })

  it('orders by id when created_at ties, losing no post across pages', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const created = await createPosts(tokens.access_token, 7)
    await env.DB.prepare('UPDATE posts SET created_at = 1767225600000 WHERE author_id = ?').bind(user.id).run()

    const desc = await walk(`/posts?author=${user.id}&limit=3`)
    expect(desc.map((page) => page.results.length)).toEqual([3, 3, 1])
    expect(desc.flatMap((page) => idsOf(page.results))).toEqual(newestFirst(created))

    const asc = await walk(`/posts?author=${user.id}&limit=3&ordering=created_at`)
    expect(asc.flatMap((page) => idsOf(page.results))).toEqual(idsOf(created))
  })

  it('ordering=created_at gives oldest first, also across pages and backwards', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const created = await createPosts(tokens.access_token, 5)
    const pages = await walk(`/posts?author=${user.id}&ordering=created_at&limit=2`)
    expect(pages.map((page) => page.results.length)).toEqual([2, 2, 1])
    expect(pages.flatMap((page) => idsOf(page.results))).toEqual(idsOf(created))
    const back = await getPage(pathOf(pages[2]!.previous!))
    expect(idsOf(back.results)).toEqual(idsOf(pages[1]!.results))

    const explicitDefault = await getPage(`/posts?author=${user.id}&ordering=-created_at&limit=5`)
    expect(idsOf(explicitDefault.results)).toEqual(newestFirst(created))
  })

  it('defaults to 20 per page', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const created = await createPosts(tokens.access_token, 21)
    const page = await getPage(`/posts?author=${user.id}`)
    expect(idsOf(page.results)).toEqual(newestFirst(created).slice(0, 20))
    expect(new URL(page.next!).searchParams.get('limit')).toBe('20')
    const rest = await getPage(pathOf(page.next!))
    expect(idsOf(rest.results)).toEqual([created[0]!.id])
    expect(rest.next).toBeNull()
  })

  it('accepts limit=100 and limit=1', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const created = await createPosts(tokens.access_token, 2)
    expect(idsOf((await getPage(`/posts?author=${user.id}&limit=100`)).results)).toEqual(newestFirst(created))
    const one = await getPage(`/posts?author=${user.id}&limit=1`)
    expect(idsOf(one.results)).toEqual([created[1]!.id])
    expect(one.next).not.toBeNull()
  })

  it.for(['101', '0', '-1', 'abc', '1.5', ''])(
    'answers 400 validation_failed naming limit for limit=%j',
    async (limit, { expect }) => {
      const problem = await expectProblem(await api('GET', `/posts?limit=${limit}`), 400, 'validation_failed')
      expect(problem.errors?.map((error) => error.path)).toContain('limit')
    },
  )

  it.for(['ordering=title', 'ordering=id', 'author=abc', 'author=0'])(
    'answers 400 validation_failed to %s',
    async (query) => {
      await expectProblem(await api('GET', `/posts?${query}`), 400, 'validation_failed')
    },
  )
})

describe('Security: forged and replayed cursors', () => {
  async function realCursor(): Promise<{ userId: number; cursor: string }> {
    const { user, tokens } = await newAuthor()
    await createPosts(tokens.access_token, 3)
    const page = await getPage(`/posts?author=${user.id}&limit=1`)
    return { userId: user.id, cursor: cursorOf(page.next!) }
  }

  async function expectCursorRefused(path: string): Promise<void> {
    const problem = await expectProblem(await api('GET', path), 400, 'validation_failed')
    if (!problem.errors?.some((error) => error.path === 'cursor'))
      throw new Error(`errors do not name cursor: ${JSON.stringify(problem)}`)
  }

  it('accepts the genuine cursor', async ({ expect }) => {
    const { userId, cursor } = await realCursor()
    const page = await getPage(`/posts?author=${userId}&limit=1&cursor=${encodeURIComponent(cursor)}`)
    expect(page.results).toHaveLength(1)
  })

  it.for([
    ['a character flipped in the MAC', (cursor: string) => flipCharAt(cursor, cursor.indexOf('.') + 1)],
    ['a character flipped in the payload', (cursor: string) => flipCharAt(cursor, 2)],
    ['the MAC cut short', (cursor: string) => cursor.slice(0, -4)],
    ['a third segment', (cursor: string) => `${cursor}.AAAA`],
    ['a random string', () => crypto.randomUUID()],
    ['a random payload.mac pair', () => `${btoa('[1,1,"n","x"]').replace(/=+$/, '')}.AAAAAAAAAAAAAAAAAAAAAA`],
    ['a 600-character cursor', () => 'A'.repeat(600)],
  ] as const)('refuses %s with 400 validation_failed', async ([, forge]) => {
    const { userId, cursor } = await realCursor()
    await expectCursorRefused(`/posts?author=${userId}&limit=1&cursor=${encodeURIComponent(forge(cursor))}`)
  })

  it('refuses a cursor from ?author=A used on ?author=B', async () => {
    const { cursor } = await realCursor()
    const other = await registerUser()
    await expectCursorRefused(`/posts?author=${other.id}&limit=1&cursor=${encodeURIComponent(cursor)}`)
  })

  it('refuses a cursor used with another q, ordering, without the filter, or on another list', async () => {
    const { userId, cursor } = await realCursor()
    const encoded = encodeURIComponent(cursor)
    await expectCursorRefused(`/posts?author=${userId}&q=post&limit=1&cursor=${encoded}`)
    await expectCursorRefused(`/posts?author=${userId}&ordering=created_at&limit=1&cursor=${encoded}`)
    await expectCursorRefused(`/posts?limit=1&cursor=${encoded}`)
    await expectCursorRefused(`/users/${userId}/posts?limit=1&cursor=${encoded}`)
  })
})

describe('GET /api/v1/posts?author=', () => {
  it("returns only that author's posts", async ({ expect }) => {
    const [alice, bob] = await Promise.all([newAuthor(), newAuthor()])
    const alicePosts = await createPosts(alice.tokens.access_token, 3)
    const bobPosts = await createPosts(bob.tokens.access_token, 2)
    const page = await getPage(`/posts?author=${alice.user.id}`)
    expect(idsOf(page.results)).toEqual(newestFirst(alicePosts))
    expect(page.results.every((post) => post.author.id === alice.user.id)).toBe(true)
    expect(idsOf((await getPage(`/posts?author=${bob.user.id}`)).results)).toEqual(newestFirst(bobPosts))
  })

  it('returns an empty page for an author without posts or an unknown author', async ({ expect }) => {
    const user = await registerUser()
    expect(await getPage(`/posts?author=${user.id}`)).toEqual({ results: [], next: null, previous: null })
    expect(await getPage('/posts?author=987654321')).toEqual({ results: [], next: null, previous: null })
  })
})

describe('GET /api/v1/posts?q= (full-text search)', () => {
  it('finds posts by a word in the title or in the body, case-insensitively', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const inTitle = uniqueWord()
    const inBody = uniqueWord()
    const byTitle = await createPost(tokens.access_token, { title: `About ${inTitle}`, body: 'nothing here' })
    const byBody = await createPost(tokens.access_token, { title: 'Plain title', body: `Deep in the text: ${inBody}.` })
    await createPost(tokens.access_token, { title: 'Unrelated', body: 'nothing to find' })

    expect(idsOf((await getPage(`/posts?q=${inTitle}`)).results)).toEqual([byTitle.id])
    expect(idsOf((await getPage(`/posts?q=${inBody}`)).results)).toEqual([byBody.id])
    expect(idsOf((await getPage(`/posts?q=${inTitle.toUpperCase()}`)).results)).toEqual([byTitle.id])
    expect(idsOf((await getPage(`/posts?q=${encodeURIComponent(`  ${inBody}  `)}`)).results)).toEqual([byBody.id])
  })

  it('ignores diacritics both ways: cafe finds Café, café finds cafe', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const word = uniqueWord()
    const accented = await createPost(tokens.access_token, {
      title: `Café ${word}`,
      body: 'Crème brûlée, naïve Ångström',
    })
    const plain = await createPost(tokens.access_token, { title: `cafe ${word}`, body: 'plain' })
    const decomposed = await createPost(tokens.access_token, { title: `Cafe\u0301 ${word}`, body: 'decomposed' })
    const search = async (q: string) =>
      idsOf((await getPage(`/posts?author=${user.id}&q=${encodeURIComponent(q)}`)).results)

    const all = [decomposed.id, plain.id, accented.id]
    expect(await search('cafe')).toEqual(all)
    expect(await search('café')).toEqual(all)
    expect(await search('CAFÉ')).toEqual(all)
    expect(await search('cafe\u0301')).toEqual(all)
    expect(await search('creme brulee')).toEqual([accented.id])
    expect(await search('NAIVE angstrom')).toEqual([accented.id])
  })

  it('requires every word: a second word narrows the results', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const word = uniqueWord()
    const other = uniqueWord()
    const both = await createPost(tokens.access_token, { title: `${word} and ${other}`, body: 'x' })
    const one = await createPost(tokens.access_token, { title: word, body: 'y' })
    expect(idsOf((await getPage(`/posts?q=${word}`)).results)).toEqual([one.id, both.id])
    expect(idsOf((await getPage(`/posts?q=${word}%20${other}`)).results)).toEqual([both.id])
  })

  it('follows edits: the old word stops matching, the new one matches', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const [oldBody, newBody, oldTitle, newTitle] = [uniqueWord(), uniqueWord(), uniqueWord(), uniqueWord()]
    const post = await createPost(tokens.access_token, { title: `Title ${oldTitle}`, body: `Body ${oldBody}` })
    expect(idsOf((await getPage(`/posts?q=${oldBody}`)).results)).toEqual([post.id])

    expect((await api('PATCH', `/posts/${post.id}`, { body: `Body ${newBody}` }, tokens.access_token)).status).toBe(200)
    expect((await getPage(`/posts?q=${oldBody}`)).results).toEqual([])
    expect(idsOf((await getPage(`/posts?q=${newBody}`)).results)).toEqual([post.id])
    expect(idsOf((await getPage(`/posts?q=${oldTitle}`)).results)).toEqual([post.id])

    const replaced = { title: `Title ${newTitle}`, body: `Body ${newBody}` }
    expect((await api('PUT', `/posts/${post.id}`, replaced, tokens.access_token)).status).toBe(200)
    expect((await getPage(`/posts?q=${oldTitle}`)).results).toEqual([])
    const found = await getPage(`/posts?q=${newTitle}`)
    expect(found.results).toMatchObject([{ id: post.id, ...replaced }])
  })

  it('forgets deleted posts', async ({ expect }) => {
    const { tokens } = await newAuthor()
    const word = uniqueWord()
    const kept = await createPost(tokens.access_token, { title: `Kept ${word}`, body: 'stays' })
    const deleted = await createPost(tokens.access_token, { title: `Deleted ${word}`, body: 'goes' })
    expect(idsOf((await getPage(`/posts?q=${word}`)).results)).toEqual([deleted.id, kept.id])
    expect((await api('DELETE', `/posts/${deleted.id}`, undefined, tokens.access_token)).status).toBe(204)
    expect(idsOf((await getPage(`/posts?q=${word}`)).results)).toEqual([kept.id])
  })

  it.for([
    ['a lone quote', (word: string) => `"${word}`],
    ['a quoted phrase', (word: string) => `"${word}"`],
    ['AND OR NOT', (word: string) => `${word} AND OR NOT`],
    ['NOT before the word', (word: string) => `NOT ${word}`],
    ['a column filter', (word: string) => `title:${word}`],
    ['a column filter on another column', (word: string) => `body:foo ${word}`],
    ['a prefix star', (word: string) => `${word}*`],
    ['a leading star', (word: string) => `* ${word}`],
    ['an open parenthesis', (word: string) => `(${word}`],
    ['NEAR(', (word: string) => `NEAR(${word} foo`],
    ['a caret and minus', (word: string) => `^${word} -foo`],
    ['braces and colon', (word: string) => `{title body}: ${word}`],
  ] as const)('searches for FTS5 syntax (%s) instead of running it', async ([, query], { expect }) => {
    const { user, tokens } = await newAuthor()
    const word = uniqueWord()
    const post = await createPost(tokens.access_token, {
      title: `Syntax ${word}`,
      body: 'and or not title body foo near: every operator word appears here',
    })
    const res = await api('GET', `/posts?author=${user.id}&q=${encodeURIComponent(query(word))}`)
    expect(res.status).toBe(200)
    expect(idsOf(((await res.json()) as PostPage).results)).toEqual([post.id])
  })

  it.for([
    '"',
    '""',
    'AND',
    'OR NOT',
    '*',
    '(',
    ')',
    'NEAR(',
    'title:',
    '"unterminated',
    "'; DROP TABLE posts; --",
    '%',
    '_',
    '\\',
  ])('answers 200 to the bare query %j (never 500)', async (q, { expect }) => {
    const res = await api('GET', `/posts?q=${encodeURIComponent(q)}`)
    expect(res.status).toBe(200)
    const page = (await res.json()) as PostPage
    expect(Array.isArray(page.results)).toBe(true)
  })

  it.for(['!!!', '"*()', '...---', '@#$%^&', '¿¡ — …'])(
    'answers 200 with no results to the punctuation-only query %j',
    async (q, { expect }) => {
      const res = await api('GET', `/posts?q=${encodeURIComponent(q)}`)
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ results: [], next: null, previous: null })
    },
  )

  it('combines q with author and pagination', async ({ expect }) => {
    const [alice, bob] = await Promise.all([newAuthor(), newAuthor()])
    const word = uniqueWord()
    const matching = await createPosts(alice.tokens.access_token, 5, word)
    await createPosts(alice.tokens.access_token, 2)
    await createPosts(bob.tokens.access_token, 2, word)

    const pages = await walk(`/posts?author=${alice.user.id}&q=${word}&limit=2`)
    expect(pages.map((page) => page.results.length)).toEqual([2, 2, 1])
    expect(pages.flatMap((page) => idsOf(page.results))).toEqual(newestFirst(matching))
    expect(new URL(pages[0]!.next!).searchParams.get('q')).toBe(word)
    const back = await getPage(pathOf(pages[2]!.previous!))
    expect(idsOf(back.results)).toEqual(idsOf(pages[1]!.results))

    const everyone = await walk(`/posts?q=${word}&limit=3`)
    expect(everyone.flatMap((page) => page.results)).toHaveLength(7)
  })
})

describe('GET /api/v1/users/{id}/posts', () => {
  it("returns that user's posts only, newest first, paginated", async ({ expect }) => {
    const [alice, bob] = await Promise.all([newAuthor(), newAuthor()])
    const alicePosts = await createPosts(alice.tokens.access_token, 5)
    await createPosts(bob.tokens.access_token, 3)

    const first = await api('GET', `/users/${alice.user.id}/posts?limit=2`)
    expect(first.status).toBe(200)
    expect(first.headers.get('cache-control')).toMatch(/no-cache|max-age=0/)
    const pages = await walk(`/users/${alice.user.id}/posts?limit=2`)
    expect(pages.map((page) => page.results.length)).toEqual([2, 2, 1])
    expect(pages[0]!.previous).toBeNull()
    expect(new URL(pages[0]!.next!).pathname).toBe(`/api/v1/users/${alice.user.id}/posts`)
    const all = pages.flatMap((page) => page.results)
    expect(idsOf(all)).toEqual(newestFirst(alicePosts))
    expect(all.every((post) => post.author.id === alice.user.id && post.author.username === alice.user.username)).toBe(
      true,
    )
    expect(all).toEqual([...alicePosts].reverse())

    const back = await getPage(pathOf(pages[2]!.previous!))
    expect(idsOf(back.results)).toEqual(idsOf(pages[1]!.results))
  })

  it('returns an empty page for a user without posts', async ({ expect }) => {
    const user = await registerUser()
    expect(await getPage(`/users/${user.id}/posts`)).toEqual({ results: [], next: null, previous: null })
  })

  it.for(['987654321', 'abc'])('answers 404 not_found for the unknown user %j', async (id) => {
    await expectProblem(await api('GET', `/users/${id}/posts`), 404, 'not_found')
  })

  it('refuses a cursor of another user’s list', async () => {
    const alice = await newAuthor()
    const bob = await registerUser()
    await createPosts(alice.tokens.access_token, 2)
    const page = await getPage(`/users/${alice.user.id}/posts?limit=1`)
    const cursor = encodeURIComponent(cursorOf(page.next!))
    await expectProblem(await api('GET', `/users/${bob.id}/posts?limit=1&cursor=${cursor}`), 400, 'validation_failed')
  })

  it('answers 400 validation_failed naming limit for limit=101', async ({ expect }) => {
    const user = await registerUser()
    const problem = await expectProblem(await api('GET', `/users/${user.id}/posts?limit=101`), 400, 'validation_failed')
    expect(problem.errors?.map((error) => error.path)).toContain('limit')
  })

  it('stops listing the posts of a user who deleted their account', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const [post] = await createPosts(tokens.access_token, 1)
    const res = await api('DELETE', '/users/me', { password: user.password }, tokens.access_token)
    expect(res.status).toBe(204)
    await expectProblem(await api('GET', `/users/${user.id}/posts`), 404, 'not_found')
    await expectProblem(await api('GET', `/posts/${post!.id}`), 404, 'not_found')
    expect((await getPage(`/posts?author=${user.id}`)).results).toEqual([])
  })
})

describe('Security: post ownership', () => {
  it('a token of a deleted user can no longer write posts', async ({ expect }) => {
    const { user, tokens } = await registerAndLogin()
    const otherSession = await login(user)
    expect((await api('DELETE', '/users/me', { password: user.password }, tokens.access_token)).status).toBe(204)
    const res = await api('POST', '/posts', { title: 'ghost', body: 'x' }, otherSession.access_token)
    expect(res.status).toBe(401)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
  })

  it('the author is the token subject, never a field of the body', async ({ expect }) => {
    const { user, tokens } = await newAuthor()
    const victim = await registerUser()
    const input = { title: 'Spoofed', body: 'x', author: { id: victim.id }, author_id: victim.id }
    const post = await createPost(tokens.access_token, input as unknown as { title: string; body: string })
    expect(post.author).toEqual({ id: user.id, username: user.username })
  })
})
