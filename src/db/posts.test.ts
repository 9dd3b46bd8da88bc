import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../../test/helpers'
import { createDb } from './client'
import { deletePost, findPost, findPostForCaller, insertPost, listPosts, listPostsOfUser, updatePost } from './posts'
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

describe('insertPost', () => {
  it('stores the post and answers it with the author’s username, in one batch', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 'Hello', body: 'World' }, T0)
    expect(post).toMatchObject({
      authorId: author.id,
      authorUsername: author.username,
      title: 'Hello',
      body: 'World',
      createdAt: T0,
      updatedAt: T0,
    })
    expect(await findPost(db, post.id)).toEqual(post)
  })

  it('refuses an author that no longer exists with 401 token_invalid (the foreign key)', async () => {
    await expect(insertPost(db, MISSING_USER_ID, { title: 't', body: 'b' }, T0)).rejects.toMatchObject({
      status: 401,
      code: 'token_invalid',
    })
  })
})

describe('updatePost', () => {
  it('keeps what is not changed and answers the saved post', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 'Old title', body: 'Old body' }, T0)
    const saved = await updatePost(db, post, { title: 'New title', body: undefined }, at(1_000))
    expect(saved).toEqual({ ...post, title: 'New title', updatedAt: at(1_000) })
    expect(await findPost(db, post.id)).toEqual(saved)
  })

  it('answers undefined when the post was deleted meanwhile', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 't', body: 'b' }, T0)
    await deletePost(db, post.id)
    expect(await updatePost(db, post, { title: 'late' }, at(1_000))).toBeUndefined()
    expect(await findPost(db, post.id)).toBeUndefined()
  })
})

describe('findPostForCaller', () => {
  it('gives the post and whether the caller is an administrator', async () => {
    const author = await newUser()
    const admin = await newUser()
    await db.batch([updateUser(db, admin.id, { isAdmin: true }, T0)])
    const post = await insertPost(db, author.id, { title: 't', body: 'b' }, T0)

    expect(await findPostForCaller(db, post.id, author.id)).toEqual({ post, callerIsAdmin: false })
    expect(await findPostForCaller(db, post.id, admin.id)).toEqual({ post, callerIsAdmin: true })
    expect(await findPostForCaller(db, post.id, MISSING_USER_ID)).toEqual({ post, callerIsAdmin: false })
  })
})

describe('listPostsOfUser', () => {
  it('tells a user without posts ([]) from no such user (undefined); lists newest first', async () => {
    const author = await newUser()
    expect(await listPostsOfUser(db, author.id, firstPage)).toEqual([])
    expect(await listPostsOfUser(db, MISSING_USER_ID, firstPage)).toBeUndefined()

    const older = await insertPost(db, author.id, { title: 'a', body: 'b' }, T0)
    const newer = await insertPost(db, author.id, { title: 'c', body: 'd' }, at(1))
    expect(idsOf(await listPostsOfUser(db, author.id, firstPage))).toEqual([newer.id, older.id])
  })

  it('answers undefined once the user is deleted, their posts gone with them', async () => {
    const author = await newUser()
    const post = await insertPost(db, author.id, { title: 'a', body: 'b' }, T0)
    await db.batch([deleteUserRow(db, author.id)])
    expect(await listPostsOfUser(db, author.id, firstPage)).toBeUndefined()
    expect(await findPost(db, post.id)).toBeUndefined()
  })
})

describe('listPosts search', () => {
  it('answers an empty page to a search without a single word, without running it', async () => {
    const author = await newUser()
    await insertPost(db, author.id, { title: 'anything', body: 'at all' }, T0)
    for (const search of ['"', '*', '()', '-- ;', '   ']) {
      expect(await listPosts(db, { authorId: author.id, search, ordering: '-created_at' }, firstPage)).toEqual([])
    }
  })

  it('searches FTS5 syntax as words: every word must match', async () => {
    const author = await newUser()
    const [a, b] = [word(), word()]
    const both = await insertPost(db, author.id, { title: `${a} OR`, body: `NEAR ${b}` }, T0)
    await insertPost(db, author.id, { title: a, body: 'only the first word' }, T0)
    const search = (text: string) =>
      listPosts(db, { authorId: author.id, search: text, ordering: 'created_at' }, firstPage)

    expect(idsOf(await search(`"${a}" OR NEAR(${b}`))).toEqual([both.id])
    expect(idsOf(await search(`title:${a} ${b}*`))).toEqual([])
  })

  it('looks for the first 16 words only', async () => {
    const author = await newUser()
    const words = Array.from({ length: 16 }, word)
    const post = await insertPost(db, author.id, { title: 'many words', body: words.join(' ') }, T0)
    const search = (text: string) =>
      listPosts(db, { authorId: author.id, search: text, ordering: 'created_at' }, firstPage)

    // A 17th word the post does not hold is not looked for…
    expect(idsOf(await search([...words, word()].join(' ')))).toEqual([post.id])
    // …while within the first 16 it must match.
    expect(idsOf(await search([word(), ...words.slice(1)].join(' ')))).toEqual([])
  })
})
