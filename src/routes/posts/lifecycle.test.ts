import { env } from 'cloudflare:workers'
import { afterEach, describe, it, vi } from 'vitest'
import type { Env as WorkerEnv } from '../../config'
import { BASE_URL, api, apiWithEnv, expectProblem, makeAdmin, mintToken, registerUser } from '../../../test/helpers'
import type { RegisteredUser } from '../../../test/helpers'
import type { Page } from '../pagination'
import type { Post } from './posts.routes'

// The posts life cycle (issue 18; docs/API.md § Posts): status and published_at on writes, who
// sees drafts and scheduled posts, the edge cache around a scheduled publication, slugs and the
// post's url. The worker runs in this isolate (test/helpers.ts fetchWorker), so a fake Date is its
// clock too: a scheduled post is tested at its time to the millisecond, never by waiting.

/** A post as the API answers it: the route's own schema. */
type PostView = Post

type PostPage = Page<PostView>

interface PostInput {
  title?: string
  body?: string
  slug?: string
  status?: string
  published_at?: string
}

interface Author {
  user: RegisteredUser
  token: string
}

const DEFAULT_URL_BASE = 'http://localhost:8787/posts/'

afterEach(() => {
  vi.useRealTimers()
})

/**
 * Stops this isolate's clock at `at` (default: now) and returns a handle to move it. Move it
 * forward only: tokens minted before carry `iat`/`nbf` of the time they were minted.
 */
function freezeClock(at = Date.now()) {
  vi.useFakeTimers({ toFake: ['Date'] })
  vi.setSystemTime(at)
  let now = at
  return {
    get now() {
      return now
    },
    set(ms: number) {
      now = ms
      vi.setSystemTime(ms)
    },
    advance(ms: number) {
      this.set(now + ms)
    },
  }
}

/** A word no other test's post contains: letters and digits only, so FTS5 keeps it one token. */
function uniqueWord(): string {
  return `w${crypto.randomUUID().replace(/-/g, '').slice(0, 14)}`
}

/** A fresh user with an access token minted with the configured key (docs/API.md precise point 2). */
async function newAuthor(): Promise<Author> {
  const user = await registerUser()
  return { user, token: await mintToken({ sub: String(user.id) }) }
}

async function newAdmin(): Promise<Author> {
  const author = await newAuthor()
  await makeAdmin(author.user.id)
  return author
}

async function createPost(token: string, input: PostInput): Promise<PostView> {
  const res = await api('POST', '/posts', { title: 'A title', body: 'A body', ...input }, token)
  if (res.status !== 201) throw new Error(`POST /posts failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostView
}

async function writePost(method: 'PUT' | 'PATCH', token: string, id: number, input: PostInput): Promise<PostView> {
  const res = await api(method, `/posts/${id}`, input, token)
  if (res.status !== 200) throw new Error(`${method} /posts/${id} failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostView
}

/** GET `path` (anonymously without `token`); the page of a 200, an error otherwise. */
async function getPage(path: string, token?: string): Promise<PostPage> {
  const res = await api('GET', path, undefined, token)
  if (res.status !== 200) throw new Error(`GET ${path} failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostPage
}

async function getPost(path: string, token?: string): Promise<PostView> {
  const res = await api('GET', path, undefined, token)
  if (res.status !== 200) throw new Error(`GET ${path} failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as PostView
}

/** Every page from `path` on, following `next` until it is null. */
async function walk(path: string, token?: string): Promise<PostView[]> {
  const posts: PostView[] = []
  for (let next: string | null = `${BASE_URL}/api/v1${path}`; next !== null; ) {
    if (posts.length > 200) throw new Error('pagination does not end')
    const page = await getPage(next.slice(`${BASE_URL}/api/v1`.length), token)
    posts.push(...page.results)
    next = page.next
  }
  return posts
}

const idsOf = (posts: PostView[]): number[] => posts.map((post) => post.id)
const iso = (ms: number): string => new Date(ms).toISOString()

async function expectNotFound(path: string, token?: string): Promise<void> {
  await expectProblem(await api('GET', path, undefined, token), 404, 'not_found')
}

/** 400 `validation_failed` whose errors name `field`. */
async function expectInvalid(res: Response, field: string): Promise<void> {
  const problem = await expectProblem(res, 400, 'validation_failed')
  const paths = problem.errors?.map((error) => error.path) ?? []
  if (!paths.includes(field)) throw new Error(`errors do not name ${field}: ${JSON.stringify(problem)}`)
}

describe('status and published_at on POST', () => {
  it('without either: published now, as before drafts existed', async ({ expect }) => {
    const clock = freezeClock()
    const { token } = await newAuthor()
    const post = await createPost(token, { title: 'Plain' })
    expect(post).toMatchObject({ status: 'published', published_at: iso(clock.now), created_at: iso(clock.now) })
    expect((await getPost(`/posts/${post.id}`)).status).toBe('published')
  })

  it('status draft: not public, published_at null; its author reads it, privately', async ({ expect }) => {
    const { user, token } = await newAuthor()
    const post = await createPost(token, { status: 'draft' })
    expect(post).toMatchObject({ status: 'draft', published_at: null })
    await expectNotFound(`/posts/${post.id}`)
    expect((await getPage(`/posts?author=${user.id}`)).results).toEqual([])

    const res = await api('GET', `/posts/${post.id}`, undefined, token)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('private, no-store')
    expect(await res.json()).toEqual(post)
  })

  it('status scheduled with a future time: scheduled for it, answered in UTC', async ({ expect }) => {
    const clock = freezeClock()
    const { token } = await newAuthor()
    // Two hours ahead, written at +01:00.
    const at = clock.now + 2 * 3_600_000
    const local = new Date(at + 3_600_000).toISOString().replace('Z', '+01:00')
    const post = await createPost(token, { status: 'scheduled', published_at: local })
    expect(post).toMatchObject({ status: 'scheduled', published_at: iso(at) })
    await expectNotFound(`/posts/${post.id}`)
  })

  it.for([
    ['without published_at', {}],
    ['with a past published_at', { published_at: '2020-01-01T00:00:00Z' }],
    ['with published_at now (not in the future)', 'now'],
  ] as const)('status scheduled %s: 400 validation_failed naming published_at', async ([, extra], { expect }) => {
    const clock = freezeClock()
    const { user, token } = await newAuthor()
    const input = extra === 'now' ? { published_at: iso(clock.now) } : extra
    const res = await api('POST', '/posts', { title: 'x', body: 'y', status: 'scheduled', ...input }, token)
    await expectInvalid(res, 'published_at')
    expect((await getPage(`/posts?author=${user.id}&status=scheduled`, token)).results).toEqual([])
  })

  it('status draft with published_at: 400 naming published_at', async () => {
    const { token } = await newAuthor()
    const res = await api(
      'POST',
      '/posts',
      { title: 'x', body: 'y', status: 'draft', published_at: '2030-01-01T00:00:00Z' },
      token,
    )
    await expectInvalid(res, 'published_at')
  })

  it.for(['2026-12-07T09:00:00', '2026-12-07', 'tomorrow', '2026-13-01T00:00:00Z', 1_767_225_600_000, null])(
    'published_at %j: 400 naming published_at',
    async (publishedAt) => {
      const { token } = await newAuthor()
      const res = await api('POST', '/posts', { title: 'x', body: 'y', published_at: publishedAt }, token)
      await expectInvalid(res, 'published_at')
    },
  )

  it.for(['Draft', 'public', 'deleted', ''])('status %j: 400 naming status', async (status, { expect }) => {
    const { token } = await newAuthor()
    const problem = await expectProblem(
      await api('POST', '/posts', { title: 'x', body: 'y', status }, token),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((error) => error.path)).toContain('status')
  })

  it('status published with a past time back-dates the post (an import): public, listed at that date', async ({
    expect,
  }) => {
    const { user, token } = await newAuthor()
    const recent = await createPost(token, { title: 'Recent' })
    const imported = await createPost(token, {
      title: 'Imported',
      status: 'published',
      published_at: '2019-05-04T12:00:00.000Z',
    })
    expect(imported).toMatchObject({ status: 'published', published_at: '2019-05-04T12:00:00.000Z' })
    expect(Date.parse(imported.created_at)).toBeGreaterThan(Date.parse('2020-01-01'))
    expect((await getPost(`/posts/${imported.id}`)).status).toBe('published')
    // Newest publication first: the import, created last, comes after the recent post.
    expect(idsOf((await getPage(`/posts?author=${user.id}`)).results)).toEqual([recent.id, imported.id])
  })

  it.for([
    ['status published with a future time', { status: 'published' }],
    ['a future published_at alone', {}],
  ] as const)('%s schedules the post', async ([, extra], { expect }) => {
    const clock = freezeClock()
    const { token } = await newAuthor()
    const at = iso(clock.now + 60_000)
    const post = await createPost(token, { ...extra, published_at: at })
    expect(post).toMatchObject({ status: 'scheduled', published_at: at })
    await expectNotFound(`/posts/${post.id}`)
  })

  it('a past published_at alone back-dates, as status published', async ({ expect }) => {
    const { token } = await newAuthor()
    const post = await createPost(token, { published_at: '2021-02-03T04:05:06.789Z' })
    expect(post).toMatchObject({ status: 'published', published_at: '2021-02-03T04:05:06.789Z' })
  })
})

describe('a scheduled post goes out at its time, with no job', () => {
  it('reads scheduled until the millisecond before, and published from its time on, in every answer', async ({
    expect,
  }) => {
    const clock = freezeClock()
    const { user, token } = await newAuthor()
    const word = uniqueWord()
    const at = clock.now + 5_000
    const post = await createPost(token, { title: `Soon ${word}`, status: 'scheduled', published_at: iso(at) })
    const publicPaths = [
      `/posts?author=${user.id}`,
      `/posts?q=${word}`,
      `/posts?author=${user.id}&status=published`,
      `/users/${user.id}/posts`,
    ]

    clock.set(at - 1)
    expect((await getPost(`/posts/${post.id}`, token)).status).toBe('scheduled')
    await expectNotFound(`/posts/${post.id}`)
    await expectNotFound(`/posts/by-slug/${post.slug}`)
    for (const path of publicPaths) expect((await getPage(path)).results, path).toEqual([])
    expect(idsOf((await getPage(`/posts?status=scheduled&author=${user.id}`, token)).results)).toEqual([post.id])

    clock.set(at)
    const published = { ...post, status: 'published' }
    expect(await getPost(`/posts/${post.id}`)).toEqual(published)
    expect(await getPost(`/posts/by-slug/${post.slug}`)).toEqual(published)
    expect(await getPost(`/posts/${post.id}`, token)).toEqual(published)
    for (const path of publicPaths) expect((await getPage(path)).results, path).toEqual([published])
    expect((await getPage(`/posts?status=scheduled&author=${user.id}`, token)).results).toEqual([])
  })
})

describe('status and published_at on PUT and PATCH', () => {
  type State = 'draft' | 'scheduled' | 'published'

  /** A post by a fresh author in `state`; the clock is frozen, so its times are exact. */
  async function postIn(state: State) {
    const clock = freezeClock()
    const author = await newAuthor()
    const scheduledAt = iso(clock.now + 3_600_000)
    const input =
      state === 'draft'
        ? { status: 'draft' }
        : state === 'scheduled'
          ? { status: 'scheduled', published_at: scheduledAt }
          : { published_at: '2024-06-01T08:00:00.000Z' }
    const post = await createPost(author.token, { title: 'Original', body: 'Original body', ...input })
    clock.advance(60_000)
    return { clock, author, post }
  }

  it.for([
    ['PUT', 'draft'],
    ['PUT', 'scheduled'],
    ['PUT', 'published'],
    ['PATCH', 'draft'],
    ['PATCH', 'scheduled'],
    ['PATCH', 'published'],
  ] as const)('%s of title and body leaves a %s post as it was', async ([method, state], { expect }) => {
    const { author, post } = await postIn(state)
    const saved = await writePost(method, author.token, post.id, { title: 'Edited', body: 'Edited body' })
    expect(saved).toMatchObject({ title: 'Edited', status: post.status, published_at: post.published_at })
  })

  it.for(['PUT', 'PATCH'] as const)('%s status draft unpublishes a published post', async (method, { expect }) => {
    const { author, post } = await postIn('published')
    expect((await getPage(`/posts?author=${author.user.id}`)).results).toHaveLength(1)
    const saved = await writePost(method, author.token, post.id, { title: 'Original', body: 'x', status: 'draft' })
    expect(saved).toMatchObject({ status: 'draft', published_at: null })
    await expectNotFound(`/posts/${post.id}`)
    await expectNotFound(`/posts/by-slug/${post.slug}`)
    expect((await getPage(`/posts?author=${author.user.id}`)).results).toEqual([])
    expect((await getPage(`/users/${author.user.id}/posts`)).results).toEqual([])
    expect(idsOf((await getPage(`/posts?status=draft&author=${author.user.id}`, author.token)).results)).toEqual([
      post.id,
    ])
  })

  it('PATCH status draft of a scheduled post takes it off the schedule', async ({ expect }) => {
    const { clock, author, post } = await postIn('scheduled')
    expect(await writePost('PATCH', author.token, post.id, { status: 'draft' })).toMatchObject({
      status: 'draft',
      published_at: null,
    })
    clock.set(Date.parse(post.published_at!) + 1)
    await expectNotFound(`/posts/${post.id}`)
  })

  it.for(['draft', 'scheduled'] as const)(
    'PATCH status published publishes a %s post now',
    async (state, { expect }) => {
      const { clock, author, post } = await postIn(state)
      const saved = await writePost('PATCH', author.token, post.id, { status: 'published' })
      expect(saved).toMatchObject({ status: 'published', published_at: iso(clock.now) })
      expect((await getPost(`/posts/${post.id}`)).status).toBe('published')
    },
  )

  it('PATCH status published of a published post keeps its date', async ({ expect }) => {
    const { author, post } = await postIn('published')
    const saved = await writePost('PATCH', author.token, post.id, { status: 'published' })
    expect(saved).toMatchObject({ status: 'published', published_at: post.published_at })
  })

  it.for(['draft', 'published'] as const)(
    'PATCH status scheduled with a future time schedules a %s post',
    async (state, { expect }) => {
      const { clock, author, post } = await postIn(state)
      const at = iso(clock.now + 10 * 60_000)
      const saved = await writePost('PATCH', author.token, post.id, { status: 'scheduled', published_at: at })
      expect(saved).toMatchObject({ status: 'scheduled', published_at: at })
      await expectNotFound(`/posts/${post.id}`)
    },
  )

  it('PATCH published_at alone re-dates: into the past publishes, into the future schedules', async ({ expect }) => {
    const { clock, author, post } = await postIn('draft')
    const past = await writePost('PATCH', author.token, post.id, { published_at: '2022-02-22T22:22:22.222Z' })
    expect(past).toMatchObject({ status: 'published', published_at: '2022-02-22T22:22:22.222Z' })
    const future = iso(clock.now + 30_000)
    expect(await writePost('PATCH', author.token, post.id, { published_at: future })).toMatchObject({
      status: 'scheduled',
      published_at: future,
    })
  })

  it.for([
    ['PATCH', 'scheduled without published_at', { status: 'scheduled' }],
    ['PATCH', 'scheduled in the past', { status: 'scheduled', published_at: '2020-01-01T00:00:00Z' }],
    ['PATCH', 'draft with published_at', { status: 'draft', published_at: '2030-01-01T00:00:00Z' }],
    [
      'PUT',
      'scheduled in the past',
      { title: 't', body: 'b', status: 'scheduled', published_at: '2020-01-01T00:00:00Z' },
    ],
  ] as const)('%s %s: 400 naming published_at, and nothing changes', async ([method, , input], { expect }) => {
    const { author, post } = await postIn('published')
    await expectInvalid(await api(method, `/posts/${post.id}`, input, author.token), 'published_at')
    expect(await getPost(`/posts/${post.id}`)).toEqual(post)
  })

  it('PATCH status scheduled with its own time, once the time has come: 400 (it is in the past now)', async () => {
    const { clock, post } = await postIn('scheduled')
    clock.set(Date.parse(post.published_at!) + 1)
    // A token of the new time: the author's was minted an hour earlier.
    const token = await mintToken({ sub: String(post.author.id) })
    const res = await api('PATCH', `/posts/${post.id}`, { status: 'scheduled', published_at: post.published_at }, token)
    await expectInvalid(res, 'published_at')
  })
})

describe('who sees what', () => {
  /** An author with a draft, a scheduled and a published post, all carrying one search word. */
  async function authorWithOneOfEach() {
    const author = await newAuthor()
    const word = uniqueWord()
    const draft = await createPost(author.token, { title: `Draft ${word}`, status: 'draft' })
    const scheduled = await createPost(author.token, {
      title: `Scheduled ${word}`,
      status: 'scheduled',
      published_at: iso(Date.now() + 3_600_000),
    })
    const published = await createPost(author.token, { title: `Published ${word}` })
    return { author, word, draft, scheduled, published }
  }

  it('anonymous callers see only the published post: lists, search, the user’s posts; 404 for the others', async ({
    expect,
  }) => {
    const { author, word, draft, scheduled, published } = await authorWithOneOfEach()
    for (const path of [
      `/posts?author=${author.user.id}`,
      `/posts?author=${author.user.id}&status=published`,
      `/posts?q=${word}`,
      `/users/${author.user.id}/posts`,
    ]) {
      expect(idsOf((await getPage(path)).results), path).toEqual([published.id])
    }
    for (const hidden of [draft, scheduled]) {
      await expectNotFound(`/posts/${hidden.id}`)
      await expectNotFound(`/posts/by-slug/${hidden.slug}`)
      // Even to a conditional request that would match anything.
      const res = await api('GET', `/posts/${hidden.id}`, undefined, undefined, { 'if-none-match': '*' })
      await expectProblem(res, 404, 'not_found')
    }
  })

  it('another user sees what anonymous callers see: 404, never 403, for a draft or a post not yet out', async ({
    expect,
  }) => {
    const { author, word, draft, scheduled, published } = await authorWithOneOfEach()
    const other = await newAuthor()
    for (const path of [`/posts?author=${author.user.id}`, `/posts?q=${word}`, `/users/${author.user.id}/posts`]) {
      expect(idsOf((await getPage(path, other.token)).results), path).toEqual([published.id])
    }
    for (const hidden of [draft, scheduled]) {
      await expectNotFound(`/posts/${hidden.id}`, other.token)
      await expectNotFound(`/posts/by-slug/${hidden.slug}`, other.token)
    }
    // Status lists are the caller's own: the other user has none.
    expect((await getPage(`/posts?status=draft&author=${author.user.id}`, other.token)).results).toEqual([])
    expect((await getPage(`/posts?status=scheduled&author=${author.user.id}`, other.token)).results).toEqual([])
    expect((await getPage('/posts?status=draft', other.token)).results).toEqual([])
  })

  it('another user editing or deleting a draft or a scheduled post gets 404; a published one 403', async ({
    expect,
  }) => {
    const { author, draft, scheduled, published } = await authorWithOneOfEach()
    const other = await newAuthor()
    for (const hidden of [draft, scheduled]) {
      for (const [method, body] of [
        ['PUT', { title: 'x', body: 'y' }],
        ['PATCH', { title: 'x' }],
        ['DELETE', undefined],
      ] as const) {
        await expectProblem(await api(method, `/posts/${hidden.id}`, body, other.token), 404, 'not_found')
      }
      expect((await getPost(`/posts/${hidden.id}`, author.token)).title).toBe(hidden.title)
    }
    await expectProblem(await api('PATCH', `/posts/${published.id}`, { title: 'x' }, other.token), 403, 'forbidden')
  })

  it('the author sees every state through the details and the status lists, privately', async ({ expect }) => {
    const { author, word, draft, scheduled, published } = await authorWithOneOfEach()
    for (const post of [draft, scheduled, published]) {
      expect(await getPost(`/posts/${post.id}`, author.token)).toEqual(post)
      expect(await getPost(`/posts/by-slug/${post.slug}`, author.token)).toEqual(post)
    }
    for (const [status, post] of [
      ['draft', draft],
      ['scheduled', scheduled],
      ['published', published],
    ] as const) {
      const res = await api('GET', `/posts?status=${status}&author=${author.user.id}`, undefined, author.token)
      expect(res.status).toBe(200)
      expect(res.headers.get('cache-control')).toBe(status === 'published' ? 'public, no-cache' : 'private, no-store')
      expect(((await res.json()) as PostPage).results).toEqual([post])
    }
    // Without `author` too: the caller's own.
    expect(idsOf((await getPage('/posts?status=draft', author.token)).results)).toEqual([draft.id])
    expect(idsOf((await getPage('/posts?status=scheduled', author.token)).results)).toEqual([scheduled.id])
    // With search: the drafts list searches the drafts.
    expect(idsOf((await getPage(`/posts?status=draft&q=${word}`, author.token)).results)).toEqual([draft.id])
  })

  it('a list without status is the public blog, for the author too', async ({ expect }) => {
    const { author, word, published } = await authorWithOneOfEach()
    expect(idsOf((await getPage(`/posts?author=${author.user.id}`, author.token)).results)).toEqual([published.id])
    expect(idsOf((await getPage(`/posts?q=${word}`, author.token)).results)).toEqual([published.id])
    expect(idsOf((await getPage(`/users/${author.user.id}/posts`, author.token)).results)).toEqual([published.id])
  })

  it('an administrator sees every post in every state, and everyone’s drafts and scheduled posts', async ({
    expect,
  }) => {
    const { author, draft, scheduled } = await authorWithOneOfEach()
    const second = await authorWithOneOfEach()
    const admin = await newAdmin()
    for (const post of [draft, scheduled]) {
      expect(await getPost(`/posts/${post.id}`, admin.token)).toEqual(post)
      expect(await getPost(`/posts/by-slug/${post.slug}`, admin.token)).toEqual(post)
    }
    expect((await getPage(`/posts?status=draft&author=${author.user.id}`, admin.token)).results).toEqual([draft])
    expect((await getPage(`/posts?status=scheduled&author=${author.user.id}`, admin.token)).results).toEqual([
      scheduled,
    ])
    const allDrafts = await walk('/posts?status=draft&limit=100', admin.token)
    expect(idsOf(allDrafts)).toEqual(expect.arrayContaining([draft.id, second.draft.id]))
    expect(allDrafts.every((post) => post.status === 'draft')).toBe(true)
    // And may edit them, as any post.
    expect(await writePost('PATCH', admin.token, draft.id, { title: 'Moderated draft' })).toMatchObject({
      title: 'Moderated draft',
      status: 'draft',
      author: { id: author.user.id },
    })
  })

  it.for(['draft', 'scheduled'])('status=%s without a token: 401 not_authenticated', async (status) => {
    await expectProblem(await api('GET', `/posts?status=${status}`), 401, 'not_authenticated')
  })

  it('status=published without a token is the public list', async ({ expect }) => {
    const { author, published } = await authorWithOneOfEach()
    expect(idsOf((await getPage(`/posts?status=published&author=${author.user.id}`)).results)).toEqual([published.id])
  })

  it.for(['all', 'Draft', ''])('status=%j: 400 naming status', async (status, { expect }) => {
    const { token } = await newAuthor()
    const problem = await expectProblem(
      await api('GET', `/posts?status=${status}`, undefined, token),
      400,
      'validation_failed',
    )
    expect(problem.errors?.map((error) => error.path)).toContain('status')
  })

  it('a bad token on a public post route is 401, not a silent anonymous answer', async () => {
    const { published } = await authorWithOneOfEach()
    await expectProblem(await api('GET', `/posts/${published.id}`, undefined, 'not-a-token'), 401, 'token_invalid')
  })
})

describe('list ordering', () => {
  /** Three published posts created in order a, b, c, published (back-dated) in order b, c, a. */
  async function backdatedPosts() {
    const clock = freezeClock()
    const author = await newAuthor()
    const at = (hoursAgo: number) => iso(clock.now - hoursAgo * 3_600_000)
    const a = await createPost(author.token, { title: 'a', published_at: at(1) })
    clock.advance(1_000)
    const b = await createPost(author.token, { title: 'b', published_at: at(3) })
    clock.advance(1_000)
    const c = await createPost(author.token, { title: 'c', published_at: at(2) })
    return { author, a, b, c }
  }

  it.for([
    ['', ['a', 'c', 'b']],
    ['&ordering=-published_at', ['a', 'c', 'b']],
    ['&ordering=published_at', ['b', 'c', 'a']],
    ['&ordering=-created_at', ['c', 'b', 'a']],
    ['&ordering=created_at', ['a', 'b', 'c']],
  ] as const)('?author=…%s lists %j, on one page and walked one by one', async ([query, titles], { expect }) => {
    const { author } = await backdatedPosts()
    const page = await getPage(`/posts?author=${author.user.id}${query}`)
    expect(page.results.map((post) => post.title)).toEqual(titles)
    const walked = await walk(`/posts?author=${author.user.id}${query}&limit=1`)
    expect(walked.map((post) => post.title)).toEqual(titles)
  })

  it('/users/{id}/posts lists newest publication first', async ({ expect }) => {
    const { author } = await backdatedPosts()
    expect((await walk(`/users/${author.user.id}/posts?limit=2`)).map((post) => post.title)).toEqual(['a', 'c', 'b'])
  })

  it('scheduled posts are listed by their time: furthest first by default, soonest first with ordering=published_at', async ({
    expect,
  }) => {
    const clock = freezeClock()
    const author = await newAuthor()
    const inMinutes = (minutes: number) => iso(clock.now + minutes * 60_000)
    const soon = await createPost(author.token, { title: 'soon', status: 'scheduled', published_at: inMinutes(10) })
    const later = await createPost(author.token, { title: 'later', status: 'scheduled', published_at: inMinutes(30) })
    const mid = await createPost(author.token, { title: 'mid', status: 'scheduled', published_at: inMinutes(20) })
    const path = `/posts?status=scheduled&author=${author.user.id}`
    expect(idsOf(await walk(`${path}&limit=1`, author.token))).toEqual([later.id, mid.id, soon.id])
    expect(idsOf(await walk(`${path}&ordering=published_at&limit=2`, author.token))).toEqual([
      soon.id,
      mid.id,
      later.id,
    ])
  })

  it('drafts are listed by their last change, newest first, whatever ordering says', async ({ expect }) => {
    const clock = freezeClock()
    const author = await newAuthor()
    const first = await createPost(author.token, { title: 'first', status: 'draft' })
    clock.advance(1_000)
    const second = await createPost(author.token, { title: 'second', status: 'draft' })
    clock.advance(1_000)
    const third = await createPost(author.token, { title: 'third', status: 'draft' })
    clock.advance(1_000)
    await writePost('PATCH', author.token, first.id, { body: 'touched' })
    const expected = [first.id, third.id, second.id]
    for (const ordering of ['', '&ordering=created_at', '&ordering=published_at', '&ordering=-created_at']) {
      const path = `/posts?status=draft&author=${author.user.id}${ordering}`
      expect(idsOf((await getPage(path, author.token)).results), ordering).toEqual(expected)
      expect(idsOf(await walk(`${path}&limit=1`, author.token)), ordering).toEqual(expected)
    }
  })
})

describe('the edge cache and scheduled posts', () => {
  // A cached public answer must expire no later than the next scheduled publication: the worker
  // stores each copy with its expiry in milliseconds (X-Edge-Cache-Expires) and checks it against
  // Date.now() on every hit, so the fake clock moves it, while the Cache API's own (real-time)
  // expiry of at least a second keeps the copy stored across the jump.

  /** An author with a published post and one scheduled 5 s ahead, on a frozen clock. */
  async function aboutToPublish() {
    const clock = freezeClock()
    const author = await newAuthor()
    const word = uniqueWord()
    const published = await createPost(author.token, { title: `Out ${word}`, body: word })
    const at = clock.now + 5_000
    const scheduled = await createPost(author.token, {
      title: `Soon ${word}`,
      body: word,
      status: 'scheduled',
      published_at: iso(at),
    })
    return { clock, author, word, published, scheduled, at }
  }

  /** Anonymous: the status (HIT or MISS) and the ids of a list. */
  async function anonymousList(path: string): Promise<{ cache: string | null; ids: number[] }> {
    const res = await api('GET', path)
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`)
    // The stored expiry is the cache's own business.
    if (res.headers.has('x-edge-cache-expires')) throw new Error('X-Edge-Cache-Expires leaked to a client')
    return { cache: res.headers.get('x-edge-cache'), ids: idsOf(((await res.json()) as PostPage).results) }
  }

  it.for([
    ['the author’s list', (id: number) => `/posts?author=${id}`],
    ['the user’s posts', (id: number) => `/users/${id}/posts`],
    ['a search', (_: number, word: string) => `/posts?q=${word}`],
  ] as const)('%s: cached, but not past the post’s time', async ([, pathOf], { expect }) => {
    const { clock, author, word, published, scheduled, at } = await aboutToPublish()
    const path = pathOf(author.user.id, word)

    expect(await anonymousList(path)).toEqual({ cache: 'MISS', ids: [published.id] })
    expect(await anonymousList(path)).toEqual({ cache: 'HIT', ids: [published.id] })
    clock.set(at - 1)
    // The post is not out yet. The copy may be a HIT or already gone: its expiry is the next
    // publication of any post (a safe bound), and other tests schedule posts too.
    expect((await anonymousList(path)).ids).toEqual([published.id])
    clock.set(at)
    // At the post's time the copy has expired: the post is listed at once.
    expect(await anonymousList(path)).toEqual({ cache: 'MISS', ids: [scheduled.id, published.id] })
    expect(await anonymousList(path)).toEqual({ cache: 'HIT', ids: [scheduled.id, published.id] })
  })

  it('a detail and a by-slug read answer 404 until the time (never cached), the post from then on', async ({
    expect,
  }) => {
    const { clock, scheduled, at } = await aboutToPublish()
    for (const path of [`/posts/${scheduled.id}`, `/posts/by-slug/${scheduled.slug}`]) {
      await expectNotFound(path)
      const again = await api('GET', path)
      expect(again.headers.get('x-edge-cache')).toBeNull()
      await expectProblem(again, 404, 'not_found')
    }
    clock.set(at - 1)
    await expectNotFound(`/posts/${scheduled.id}`)
    await expectNotFound(`/posts/by-slug/${scheduled.slug}`)
    clock.set(at)
    for (const path of [`/posts/${scheduled.id}`, `/posts/by-slug/${scheduled.slug}`]) {
      const res = await api('GET', path)
      expect(res.status).toBe(200)
      expect(res.headers.get('x-edge-cache')).toBe('MISS')
      expect(res.headers.get('cache-control')).toBe('public, no-cache')
      expect(await res.json()).toEqual({ ...scheduled, status: 'published' })
    }
  })

  it('moving a published post back to draft empties the cache: gone from the list, 404', async ({ expect }) => {
    const { author, published } = await aboutToPublish()
    const path = `/posts?author=${author.user.id}`
    await anonymousList(path)
    expect((await anonymousList(path)).cache).toBe('HIT')
    const detail = await api('GET', `/posts/${published.id}`)
    expect(detail.status).toBe(200)
    await detail.body?.cancel()

    await writePost('PATCH', author.token, published.id, { status: 'draft' })
    expect(await anonymousList(path)).toEqual({ cache: 'MISS', ids: [] })
    await expectNotFound(`/posts/${published.id}`)
  })
})

describe('slugs', () => {
  it('are derived from the title: lower case ASCII, accents folded, joined by -', async ({ expect }) => {
    const { token } = await newAuthor()
    const word = uniqueWord()
    const post = await createPost(token, { title: `Café Straße: Ærø & Łódź — ${word}!` })
    expect(post.slug).toBe(`cafe-strasse-aero-lodz-${word}`)
    expect(post.url).toBe(`${DEFAULT_URL_BASE}${post.slug}`)
  })

  it('are made unique with -2, -3 …', async ({ expect }) => {
    const { token } = await newAuthor()
    const title = `Same title ${uniqueWord()}`
    const slugs = []
    for (let i = 0; i < 3; i++) slugs.push((await createPost(token, { title })).slug)
    const base = slugs[0]!
    expect(slugs).toEqual([base, `${base}-2`, `${base}-3`])
  })

  it('are at most 80 characters, cut at a word boundary', async ({ expect }) => {
    const { token } = await newAuthor()
    const word = uniqueWord()
    const post = await createPost(token, { title: `${word} ${'lengthy words '.repeat(10)}` })
    expect(post.slug.length).toBeLessThanOrEqual(80)
    expect(post.slug).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/)
    expect(post.slug.startsWith(`${word}-lengthy-words-`)).toBe(true)
  })

  it('are `post` (made unique) for a title with nothing left to use', async ({ expect }) => {
    const { token } = await newAuthor()
    for (const title of ['🎉🚀', '東京タワー', '!!!']) {
      expect((await createPost(token, { title })).slug, title).toMatch(/^post(-[0-9]+)?$/)
    }
  })

  it('may be chosen on create, up to 80 characters', async ({ expect }) => {
    const { token } = await newAuthor()
    const slug = `my-${uniqueWord()}`
    const post = await createPost(token, { title: 'Whatever the title', slug })
    expect(post).toMatchObject({ slug, url: `${DEFAULT_URL_BASE}${slug}` })
    const long = `${uniqueWord()}-${'x'.repeat(80)}`.slice(0, 80)
    expect((await createPost(token, { title: 'Long', slug: long })).slug).toBe(long)
  })

  it.for([
    'Upper-Case',
    'double--hyphen',
    '-leading',
    'trailing-',
    'with space',
    'under_score',
    'café',
    'dot.ted',
    'slash/ed',
    '',
    'x'.repeat(81),
  ])('a chosen slug %j: 400 naming slug on POST and PATCH', async (slug, { expect }) => {
    const { token } = await newAuthor()
    const post = await createPost(token, { title: 'Valid' })
    for (const [method, path, body] of [
      ['POST', '/posts', { title: 'x', body: 'y', slug }],
      ['PATCH', `/posts/${post.id}`, { slug }],
      ['PUT', `/posts/${post.id}`, { title: 'x', body: 'y', slug }],
    ] as const) {
      const problem = await expectProblem(await api(method, path, body, token), 400, 'validation_failed')
      expect(
        problem.errors?.map((error) => error.path),
        method,
      ).toContain('slug')
    }
    expect((await getPost(`/posts/${post.id}`)).slug).toBe(post.slug)
  })

  it('a chosen slug another post has: 409 slug_taken, on create and on change, and nothing changes', async ({
    expect,
  }) => {
    const [alice, bob] = await Promise.all([newAuthor(), newAuthor()])
    const taken = await createPost(alice.token, { title: 'Taken', slug: `taken-${uniqueWord()}` })
    await expectProblem(
      await api('POST', '/posts', { title: 'x', body: 'y', slug: taken.slug }, bob.token),
      409,
      'slug_taken',
    )
    const mine = await createPost(bob.token, { title: 'Mine' })
    for (const [method, body] of [
      ['PATCH', { slug: taken.slug }],
      ['PUT', { title: 'Mine', body: 'A body', slug: taken.slug }],
    ] as const) {
      await expectProblem(await api(method, `/posts/${mine.id}`, body, bob.token), 409, 'slug_taken')
    }
    expect(await getPost(`/posts/${mine.id}`)).toEqual(mine)
    // A draft's slug is taken as well: slugs are unique across every state.
    const draft = await createPost(alice.token, { title: 'Hidden', status: 'draft' })
    await expectProblem(
      await api('POST', '/posts', { title: 'x', body: 'y', slug: draft.slug }, bob.token),
      409,
      'slug_taken',
    )
  })

  it('may be changed; its own slug again is no conflict; the old one is then free', async ({ expect }) => {
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Renamed ${uniqueWord()}` })
    expect(await writePost('PATCH', token, post.id, { slug: post.slug })).toMatchObject({ slug: post.slug })
    const slug = `new-${uniqueWord()}`
    const changed = await writePost('PATCH', token, post.id, { slug })
    expect(changed).toMatchObject({ slug, url: `${DEFAULT_URL_BASE}${slug}` })
    await expectNotFound(`/posts/by-slug/${post.slug}`)
    expect((await getPost(`/posts/by-slug/${slug}`)).id).toBe(post.id)
    expect((await createPost(token, { title: 'Reuse', slug: post.slug })).slug).toBe(post.slug)
  })

  it.for(['PUT', 'PATCH'] as const)('stay when the title changes (%s)', async (method, { expect }) => {
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Before ${uniqueWord()}` })
    const saved = await writePost(method, token, post.id, { title: `After ${uniqueWord()}`, body: 'new' })
    expect(saved.title).not.toBe(post.title)
    expect(saved).toMatchObject({ slug: post.slug, url: post.url })
    expect((await getPost(`/posts/by-slug/${post.slug}`)).title).toBe(saved.title)
  })

  it('stay distinct for a burst of concurrent posts with one title', async ({ expect }) => {
    const { user, token } = await newAuthor()
    const title = `Burst ${uniqueWord()}`
    const responses = await Promise.all(
      Array.from({ length: 12 }, (_, i) => api('POST', '/posts', { title, body: `burst ${i}` }, token)),
    )
    expect(responses.map((res) => res.status)).toEqual(Array(12).fill(201))
    const posts = (await Promise.all(responses.map((res) => res.json()))) as PostView[]
    const slugs = posts.map((post) => post.slug)
    expect(new Set(slugs).size).toBe(12)
    const base = title.toLowerCase().replace(' ', '-')
    for (const slug of slugs) expect(slug).toMatch(new RegExp(`^${base}(-[0-9]+)?$`))
    expect(slugs).toContain(base)
    const listed = await getPage(`/posts?author=${user.id}&limit=100`)
    expect(new Set(listed.results.map((post) => post.slug))).toEqual(new Set(slugs))
  })
})

describe('GET /api/v1/posts/by-slug/{slug}', () => {
  it('returns the post with a strong ETag; If-None-Match → 304 with no body', async ({ expect }) => {
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `By slug ${uniqueWord()}` })
    const res = await api('GET', `/posts/by-slug/${post.slug}`)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('public, no-cache')
    expect(await res.json()).toEqual(post)
    const etag = res.headers.get('etag')!
    expect(etag).toMatch(/^"[^"]+"$/)
    // The same representation as by id, so the same ETag.
    expect((await api('GET', `/posts/${post.id}`)).headers.get('etag')).toBe(etag)

    for (const header of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const again = await api('GET', `/posts/by-slug/${post.slug}`, undefined, undefined, { 'if-none-match': header })
      expect(again.status, header).toBe(304)
      expect(await again.text()).toBe('')
      expect(again.headers.get('etag')).toBe(etag)
    }
    const other = await api('GET', `/posts/by-slug/${post.slug}`, undefined, undefined, { 'if-none-match': '"x"' })
    expect(other.status).toBe(200)
    await other.body?.cancel()
  })

  it('gives a new ETag after an edit', async ({ expect }) => {
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Edit ${uniqueWord()}` })
    const etag = (await api('GET', `/posts/by-slug/${post.slug}`)).headers.get('etag')!
    await writePost('PATCH', token, post.id, { body: 'changed' })
    const res = await api('GET', `/posts/by-slug/${post.slug}`, undefined, undefined, { 'if-none-match': etag })
    expect(res.status).toBe(200)
    expect(((await res.json()) as PostView).body).toBe('changed')
    expect(res.headers.get('etag')).not.toBe(etag)
  })

  it('shows a draft to its author (private, with an ETag) and to no one else', async ({ expect }) => {
    const { token } = await newAuthor()
    const draft = await createPost(token, { title: `Draft ${uniqueWord()}`, status: 'draft' })
    const res = await api('GET', `/posts/by-slug/${draft.slug}`, undefined, token)
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('private, no-store')
    const etag = res.headers.get('etag')!
    expect(await res.json()).toEqual(draft)
    const revalidated = await api('GET', `/posts/by-slug/${draft.slug}`, undefined, token, { 'if-none-match': etag })
    expect(revalidated.status).toBe(304)
    await expectNotFound(`/posts/by-slug/${draft.slug}`)
    await expectProblem(
      await api('GET', `/posts/by-slug/${draft.slug}`, undefined, undefined, { 'if-none-match': etag }),
      404,
      'not_found',
    )
    await expectNotFound(`/posts/by-slug/${draft.slug}`, (await newAuthor()).token)
  })

  it.for([
    ['an unknown slug', (): string => `nothing-${uniqueWord()}`],
    ['an invalid slug', (): string => 'Not_A_Slug'],
    ['an 81-character slug', (): string => 'x'.repeat(81)],
    ['percent-encoded markup', (): string => encodeURIComponent('<script>')],
  ] as const)('answers 404 not_found to %s', async ([, slug]) => {
    await expectNotFound(`/posts/by-slug/${slug()}`)
  })
})

describe('url: POST_URL_TEMPLATE', () => {
  // Each env object is parsed once (test/helpers.ts apiWithEnv). Reads go with a token: the edge
  // cache keys on the request, not on the configuration, so an anonymous read here could leave a
  // copy with these URLs for the default env's readers.
  const byId: WorkerEnv = { ...env, POST_URL_TEMPLATE: 'https://blog.example.com/{id}/{slug}.html' }
  const withBase: WorkerEnv = {
    ...env,
    MAIL_TRANSPORT: undefined,
    PUBLIC_BASE_URL: 'https://blog.example.com/',
    POST_URL_TEMPLATE: '{PUBLIC_BASE_URL}/p/{id}?s={slug}',
  }

  it('is {PUBLIC_BASE_URL}/posts/{slug} by default', async ({ expect }) => {
    const { token } = await newAuthor()
    const post = await createPost(token, { title: `Default url ${uniqueWord()}` })
    expect(post.url).toBe(`http://localhost:8787/posts/${post.slug}`)
  })

  it('fills in {id} and {slug} of a custom template in every answer', async ({ expect }) => {
    const { user, token } = await newAuthor()
    const created = await createPost(token, { title: `Custom ${uniqueWord()}` })
    const expected = `https://blog.example.com/${created.id}/${created.slug}.html`

    const detail = await apiWithEnv(byId, 'GET', `/posts/${created.id}`, undefined, token)
    expect(((await detail.json()) as PostView).url).toBe(expected)
    const bySlug = await apiWithEnv(byId, 'GET', `/posts/by-slug/${created.slug}`, undefined, token)
    expect(((await bySlug.json()) as PostView).url).toBe(expected)
    const list = await apiWithEnv(byId, 'GET', `/posts?author=${user.id}`, undefined, token)
    expect(((await list.json()) as PostPage).results.map((post) => post.url)).toEqual([expected])

    const patched = await apiWithEnv(byId, 'PATCH', `/posts/${created.id}`, { slug: `moved-${created.id}` }, token)
    expect(((await patched.json()) as PostView).url).toBe(
      `https://blog.example.com/${created.id}/moved-${created.id}.html`,
    )
    const posted = await apiWithEnv(byId, 'POST', '/posts', { title: 'Posted here', body: 'x' }, token)
    expect(posted.status).toBe(201)
    const post = (await posted.json()) as PostView
    expect(post.url).toBe(`https://blog.example.com/${post.id}/${post.slug}.html`)
  })

  it('fills in {PUBLIC_BASE_URL}, without its trailing slash', async ({ expect }) => {
    const { token } = await newAuthor()
    const created = await createPost(token, { title: `Base ${uniqueWord()}` })
    const res = await apiWithEnv(withBase, 'GET', `/posts/${created.id}`, undefined, token)
    expect(res.status).toBe(200)
    expect(((await res.json()) as PostView).url).toBe(`https://blog.example.com/p/${created.id}?s=${created.slug}`)
  })
})
