import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import { insertNewsletter } from './newsletters'
import {
  deletePost,
  findPost,
  findPostForCaller,
  findPostToChange,
  insertPost,
  listPosts,
  listPostsOfUser,
  updatePost,
} from './posts'
import { deleteUserRow, insertUser, updateUser } from './users'

// What the HTTP tests cannot reach: the races (a user or a post gone between the check and the
// write) and the limits of the search query built from free text.

const db = createDb({ DB: env.DB })
const T0 = new Date('2026-03-01T10:00:00.000Z')
const at = (ms: number): Date => new Date(T0.getTime() + ms)
const MISSING_USER_ID = 2_000_000_000

async function newUser(): Promise<{ id: number; username: string }> {
  const username = uniqueName('posts')
  const [rows] = await db.batch([insertUser(db, { username, email: `${username}@example.com`, passwordHash: 'h' }, T0)])
  return { id: rows[0]!.id, username }
}

/** A word no other post holds (FTS5 tokens: letters, digits and underscores). */
const word = (): string => `w${crypto.randomUUID().replace(/-/g, '')}`

const idsOf = (rows: { id: number }[] | undefined) => rows?.map((row) => row.id)
const firstPage = { position: null, limit: 50 }
// After every post these tests write: all of them are published by then.
const NOW = at(60_000)
const PUBLISHED = { status: 'published' } as const

describe('insertPost', () => {
  it('stores the post and answers it with the author’s username, in one batch', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 'Hello', body: 'World', publishedAt: T0 }, T0)
    expect(post).toMatchObject({
      authorId: author.id,
      authorUsername: author.username,
      title: 'Hello',
      body: 'World',
      createdAt: T0,
      updatedAt: T0,
    })
    expect(await findPost(db, { id: post.id })).toEqual(post)
  })

  it('refuses an author that no longer exists with 401 token_invalid (the foreign key)', async () => {
    await expect(insertPost(db, MISSING_USER_ID, { title: 't', body: 'b', publishedAt: T0 }, T0)).rejects.toMatchObject(
      {
        status: 401,
        code: 'token_invalid',
      },
    )
  })
})

describe('updatePost', () => {
  it('keeps what is not changed and answers the saved post', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 'Old title', body: 'Old body', publishedAt: T0 }, T0)
    const saved = await updatePost(db, post, { title: 'New title', body: undefined }, at(1_000))
    expect(saved).toEqual({ ...post, title: 'New title', updatedAt: at(1_000) })
    expect(await findPost(db, { id: post.id })).toEqual(saved)
  })

  it('answers undefined when the post was deleted meanwhile', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 't', body: 'b', publishedAt: T0 }, T0)
    await deletePost(db, post.id)
    expect(await updatePost(db, post, { title: 'late' }, at(1_000))).toBeUndefined()
    expect(await findPost(db, { id: post.id })).toBeUndefined()
  })
})

describe('findPostForCaller', () => {
  it('gives the post and whether the caller is an administrator', async () => {
    const author = await newUser()
    const admin = await newUser()
    await db.batch([updateUser(db, admin.id, { isAdmin: true }, T0)])
    const post = await insertPost(db, author.id, { title: 't', body: 'b', publishedAt: T0 }, T0)

    expect(await findPostForCaller(db, { id: post.id }, author.id)).toEqual({
      post,
      callerIsAdmin: false,
    })
    expect(await findPostForCaller(db, { id: post.id }, admin.id)).toEqual({
      post,
      callerIsAdmin: true,
    })
    expect(await findPostForCaller(db, { id: post.id }, MISSING_USER_ID)).toEqual({
      post,
      callerIsAdmin: false,
    })
  })
})

describe('findPostToChange', () => {
  it('adds the post’s newsletter, when it has one, in the same round trip', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 't', body: 'b', publishedAt: T0 }, T0)
    expect(await findPostToChange(db, { id: post.id }, author.id)).toEqual({
      post,
      callerIsAdmin: false,
      newsletter: undefined,
    })
    const newsletter = await insertNewsletter(
      db,
      { postId: post.id, scheduledFor: null, createdBy: author.id, apiOrigin: 'https://api.example' },
      T0,
    )
    expect(await findPostToChange(db, { id: post.id }, author.id)).toEqual({
      post,
      callerIsAdmin: false,
      newsletter: { id: newsletter.id, status: 'sending' },
    })
  })
})

describe('listPostsOfUser', () => {
  it('tells a user without posts ([]) from no such user (undefined); lists newest first', async () => {
    const author = await newUser()
    expect((await listPostsOfUser(db, author.id, firstPage, NOW))?.rows).toEqual([])
    expect(await listPostsOfUser(db, MISSING_USER_ID, firstPage, NOW)).toBeUndefined()

    const older = await insertPost(db, author.id, { title: 'a', body: 'b', publishedAt: T0 }, T0)
    const newer = await insertPost(db, author.id, { title: 'c', body: 'd', publishedAt: at(1) }, at(1))
    expect(idsOf((await listPostsOfUser(db, author.id, firstPage, NOW))?.rows)).toEqual([newer.id, older.id])
  })

  it('answers undefined once the user is deleted, their posts gone with them', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 'a', body: 'b', publishedAt: T0 }, T0)
    await db.batch([deleteUserRow(db, author.id)])
    expect(await listPostsOfUser(db, author.id, firstPage, NOW)).toBeUndefined()
    expect(await findPost(db, { id: post.id })).toBeUndefined()
  })
})

describe('listPosts search', () => {
  it('answers an empty page to a search without a single word, without running it', async () => {
    const author = await newUser()
    await insertPost(db, author.id, { title: 'anything', body: 'at all', publishedAt: T0 }, T0)
    for (const search of ['"', '*', '()', '-- ;', '   ']) {
      expect(
        (
          await listPosts(
            db,
            { scope: PUBLISHED, authorId: author.id, search, ordering: '-created_at' },
            firstPage,
            NOW,
          )
        ).rows,
      ).toEqual([])
    }
  })

  it('searches FTS5 syntax as words: every word must match', async () => {
    const author = await newUser()
    const [a, b] = [word(), word()]
    const both = await insertPost(db, author.id, { title: `${a} OR`, body: `NEAR ${b}`, publishedAt: T0 }, T0)
    await insertPost(db, author.id, { title: a, body: 'only the first word', publishedAt: T0 }, T0)
    const search = async (text: string) =>
      (
        await listPosts(
          db,
          { scope: PUBLISHED, authorId: author.id, search: text, ordering: 'created_at' },
          firstPage,
          NOW,
        )
      ).rows

    expect(idsOf(await search(`"${a}" OR NEAR(${b}`))).toEqual([both.id])
    expect(idsOf(await search(`title:${a} ${b}*`))).toEqual([])
  })

  it('looks for the first 16 words only', async () => {
    const author = await newUser()
    const words = Array.from({ length: 16 }, word)
    const post = await insertPost(db, author.id, { title: 'many words', body: words.join(' '), publishedAt: T0 }, T0)
    const search = async (text: string) =>
      (
        await listPosts(
          db,
          { scope: PUBLISHED, authorId: author.id, search: text, ordering: 'created_at' },
          firstPage,
          NOW,
        )
      ).rows

    // A 17th word the post does not hold is not looked for…
    expect(idsOf(await search([...words, word()].join(' ')))).toEqual([post.id])
    // …while within the first 16 it must match.
    expect(idsOf(await search([word(), ...words.slice(1)].join(' ')))).toEqual([])
  })
})

describe('slugs', () => {
  it('derives the slug from the title and makes it unique with -2, -3 …', async () => {
    const author = await newUser()
    const title = `Café ${word()}`
    const first = await insertPost(db, author.id, { title, body: 'b', publishedAt: T0 }, T0)
    const second = await insertPost(db, author.id, { title, body: 'b', publishedAt: T0 }, T0)
    const third = await insertPost(db, author.id, { title, body: 'b', publishedAt: T0 }, T0)
    expect(first.slug).toMatch(/^cafe-w[0-9a-f]+$/)
    expect([second.slug, third.slug]).toEqual([`${first.slug}-2`, `${first.slug}-3`])
  })

  it('gives concurrent posts with one title different slugs (the loser of the unique index looks again)', async () => {
    const author = await newUser()
    const title = `Race ${word()}`
    const posts = await Promise.all(
      Array.from({ length: 4 }, () => insertPost(db, author.id, { title, body: 'b', publishedAt: T0 }, T0)),
    )
    expect(new Set(posts.map((post) => post.slug)).size).toBe(4)
  })

  it('refuses a chosen slug that is taken with 409 slug_taken, on insert and update', async () => {
    const author = await newUser()
    const slug = `chosen-${word()}`
    const taken = await insertPost(db, author.id, { title: 't', body: 'b', slug, publishedAt: T0 }, T0)
    expect(taken.slug).toBe(slug)
    await expect(insertPost(db, author.id, { title: 't', body: 'b', slug, publishedAt: T0 }, T0)).rejects.toMatchObject(
      {
        status: 409,
        code: 'slug_taken',
      },
    )
    const other = await insertPost(db, author.id, { title: 'other', body: 'b', publishedAt: T0 }, T0)
    await expect(updatePost(db, other, { slug }, at(1))).rejects.toMatchObject({ status: 409, code: 'slug_taken' })
    expect(await findPost(db, { slug })).toMatchObject({ id: taken.id })
  })
})

describe('list scopes and the next publication', () => {
  it('shows drafts and scheduled posts to their author, everyone’s to an admin, and none to the public', async () => {
    const author = await newUser()
    const stranger = await newUser()
    const admin = await newUser()
    await db.batch([updateUser(db, admin.id, { isAdmin: true }, T0)])
    const draft = await insertPost(db, author.id, { title: 'draft', body: 'b', publishedAt: null }, T0)
    const scheduled = await insertPost(db, author.id, { title: 'later', body: 'b', publishedAt: at(120_000) }, T0)
    const published = await insertPost(db, author.id, { title: 'out', body: 'b', publishedAt: T0 }, T0)
    const list = async (scope: Parameters<typeof listPosts>[1]['scope']) =>
      idsOf((await listPosts(db, { scope, authorId: author.id, ordering: '-published_at' }, firstPage, NOW)).rows)

    expect(await list(PUBLISHED)).toEqual([published.id])
    expect(await list({ status: 'draft', viewerId: author.id })).toEqual([draft.id])
    expect(await list({ status: 'scheduled', viewerId: author.id })).toEqual([scheduled.id])
    expect(await list({ status: 'draft', viewerId: stranger.id })).toEqual([])
    expect(await list({ status: 'scheduled', viewerId: admin.id })).toEqual([scheduled.id])
    expect(await list({ status: 'draft', viewerId: admin.id })).toEqual([draft.id])
  })

  it('tells a public list when the next scheduled post goes out', async () => {
    const author = await newUser()
    // Far after every other test's posts, so no other scheduled post comes first.
    const later = new Date('2099-01-01T00:00:00.000Z')
    await insertPost(db, author.id, { title: 'much later', body: 'b', publishedAt: later }, T0)
    const justBefore = new Date(later.getTime() - 1)
    const window = await listPosts(db, { scope: PUBLISHED, ordering: '-published_at' }, firstPage, justBefore)
    expect(window.nextPublicationAt).toEqual(later)
    const mine = await listPostsOfUser(db, author.id, firstPage, justBefore)
    expect(mine).toMatchObject({ rows: [], nextPublicationAt: later })
  })
})

describe('insertPost: slugs of a title many posts share', () => {
  it('numbers the first 20 (-2 … -20) and gives later ones a random number, in one lookup each', async () => {
    const user = await newUser()
    const title = `Weekly notes ${word()}`
    const base = title.toLowerCase().replaceAll(' ', '-')
    const slugs: string[] = []
    for (let n = 0; n < 22; n++) {
      const post = await insertPost(db, user.id, { title, body: 'b', publishedAt: T0 }, T0)
      slugs.push(post.slug)
    }
    expect(slugs.slice(0, 20)).toEqual([base, ...Array.from({ length: 19 }, (_, i) => `${base}-${i + 2}`)])
    for (const slug of slugs.slice(20)) expect(slug).toMatch(new RegExp(`^${base}-\\d{4,7}$`))
    expect(new Set(slugs).size).toBe(22)
  })
})
