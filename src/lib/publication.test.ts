import { describe, expect, it } from 'vitest'
import { ApiError } from './api-error'
import { POST_STATUSES, postStatus, postUrl, publishedAtAfter } from './publication'
import type { PublicationInput } from './publication'

// The life cycle of docs/API.md § Posts: the status follows from published_at and the clock
// alone; publishedAtAfter() is the table of what a write with status/published_at leaves.

const NOW = new Date('2026-12-07T09:00:00.000Z')
const at = (offsetMs: number) => new Date(NOW.getTime() + offsetMs)
const PAST = at(-86_400_000)
const FUTURE = at(3_600_000)

/** The 400 `validation_failed` naming published_at that publishedAtAfter() throws. */
function expectPublishedAtRefused(input: PublicationInput, current: Date | null | undefined): void {
  let thrown: unknown
  try {
    publishedAtAfter(input, current, NOW)
  } catch (err) {
    thrown = err
  }
  expect(thrown).toBeInstanceOf(ApiError)
  expect(thrown).toMatchObject({ status: 400, code: 'validation_failed' })
  const errors = (thrown as ApiError).extra.errors
  expect(errors?.map((error) => error.path)).toEqual(['published_at'])
  expect(errors?.[0]?.message).toMatch(/\S/)
}

describe('POST_STATUSES', () => {
  it('are draft, scheduled and published', () => {
    expect([...POST_STATUSES]).toEqual(['draft', 'scheduled', 'published'])
  })
})

describe('postStatus', () => {
  it('is draft for a null published_at, whatever the time', () => {
    expect(postStatus(null, NOW)).toBe('draft')
    expect(postStatus(null, new Date(0))).toBe('draft')
  })

  it('is scheduled before published_at and published from it on, to the millisecond', () => {
    expect(postStatus(FUTURE, NOW)).toBe('scheduled')
    expect(postStatus(NOW, at(-1))).toBe('scheduled')
    expect(postStatus(NOW, NOW)).toBe('published')
    expect(postStatus(NOW, at(1))).toBe('published')
    expect(postStatus(PAST, NOW)).toBe('published')
  })

  it('turns published by itself as the clock passes the time, with nothing else changing', () => {
    const publishedAt = at(5_000)
    const states = [0, 4_000, 4_999, 5_000, 5_001, 60_000].map((ms) => postStatus(publishedAt, at(ms)))
    expect(states).toEqual(['scheduled', 'scheduled', 'scheduled', 'published', 'published', 'published'])
  })
})

describe('publishedAtAfter: a new post (current undefined)', () => {
  it('with neither status nor published_at: published now (clients before drafts)', () => {
    expect(publishedAtAfter({}, undefined, NOW)).toEqual(NOW)
  })

  it('draft: null', () => {
    expect(publishedAtAfter({ status: 'draft' }, undefined, NOW)).toBeNull()
  })

  it('draft with a time: 400 naming published_at', () => {
    expectPublishedAtRefused({ status: 'draft', publishedAt: FUTURE }, undefined)
    expectPublishedAtRefused({ status: 'draft', publishedAt: PAST }, undefined)
  })

  it('scheduled with a future time: that time', () => {
    expect(publishedAtAfter({ status: 'scheduled', publishedAt: FUTURE }, undefined, NOW)).toEqual(FUTURE)
    expect(publishedAtAfter({ status: 'scheduled', publishedAt: at(1) }, undefined, NOW)).toEqual(at(1))
  })

  it.for([
    ['without a time', undefined],
    ['with a past time', PAST],
    ['with now itself (not in the future)', NOW],
    ['a millisecond ago', at(-1)],
  ] as const)('scheduled %s: 400 naming published_at', ([, publishedAt]) => {
    expectPublishedAtRefused({ status: 'scheduled', publishedAt }, undefined)
  })

  it('published without a time: now', () => {
    expect(publishedAtAfter({ status: 'published' }, undefined, NOW)).toEqual(NOW)
  })

  it('published with a past time back-dates; with a future time schedules', () => {
    expect(publishedAtAfter({ status: 'published', publishedAt: PAST }, undefined, NOW)).toEqual(PAST)
    expect(publishedAtAfter({ status: 'published', publishedAt: FUTURE }, undefined, NOW)).toEqual(FUTURE)
  })

  it('a time alone: as published with that time', () => {
    expect(publishedAtAfter({ publishedAt: PAST }, undefined, NOW)).toEqual(PAST)
    expect(publishedAtAfter({ publishedAt: FUTURE }, undefined, NOW)).toEqual(FUTURE)
  })
})

describe('publishedAtAfter: an existing post', () => {
  const states = [
    ['a draft', null],
    ['a scheduled post', FUTURE],
    ['a published post', PAST],
  ] as const

  it.for(states)('with neither status nor published_at, %s stays as it is (undefined)', ([, current]) => {
    expect(publishedAtAfter({}, current, NOW)).toBeUndefined()
  })

  it.for(states)('draft: %s becomes a draft (null)', ([, current]) => {
    expect(publishedAtAfter({ status: 'draft' }, current, NOW)).toBeNull()
  })

  it.for(states)('draft with a time, for %s: 400 naming published_at', ([, current]) => {
    expectPublishedAtRefused({ status: 'draft', publishedAt: FUTURE }, current)
  })

  it.for(states)('scheduled with a future time: %s is scheduled for it', ([, current]) => {
    const later = at(7_200_000)
    expect(publishedAtAfter({ status: 'scheduled', publishedAt: later }, current, NOW)).toEqual(later)
  })

  it.for(states)('scheduled without a time or with a past one, for %s: 400 naming published_at', ([, current]) => {
    expectPublishedAtRefused({ status: 'scheduled' }, current)
    expectPublishedAtRefused({ status: 'scheduled', publishedAt: PAST }, current)
  })

  it('published without a time: a draft or a scheduled post is published now', () => {
    expect(publishedAtAfter({ status: 'published' }, null, NOW)).toEqual(NOW)
    expect(publishedAtAfter({ status: 'published' }, FUTURE, NOW)).toEqual(NOW)
  })

  it('published without a time: a published post keeps its date (undefined)', () => {
    expect(publishedAtAfter({ status: 'published' }, PAST, NOW)).toBeUndefined()
    expect(publishedAtAfter({ status: 'published' }, NOW, NOW)).toBeUndefined()
  })

  it.for(states)('published with a time, for %s: that time (back-dated or scheduled)', ([, current]) => {
    const earlier = at(-7_200_000)
    expect(publishedAtAfter({ status: 'published', publishedAt: earlier }, current, NOW)).toEqual(earlier)
    expect(publishedAtAfter({ status: 'published', publishedAt: FUTURE }, current, NOW)).toEqual(FUTURE)
  })

  it.for(states)('a time alone, for %s: that time', ([, current]) => {
    expect(publishedAtAfter({ publishedAt: PAST }, current, NOW)).toEqual(PAST)
    expect(publishedAtAfter({ publishedAt: FUTURE }, current, NOW)).toEqual(FUTURE)
  })

  it('judges "already published" by the clock it is given: a scheduled post whose time has come keeps it', () => {
    const publishedAt = at(5_000)
    expect(publishedAtAfter({ status: 'published' }, publishedAt, at(4_999))).toEqual(at(4_999))
    expect(publishedAtAfter({ status: 'published' }, publishedAt, at(5_000))).toBeUndefined()
  })
})

describe('postUrl', () => {
  it('fills in {slug}', () => {
    expect(postUrl({ postUrlTemplate: 'https://blog.example.com/posts/{slug}' }, { id: 42, slug: 'hello-edge' })).toBe(
      'https://blog.example.com/posts/hello-edge',
    )
  })

  it('fills in {id}', () => {
    expect(postUrl({ postUrlTemplate: 'https://blog.example.com/p/{id}' }, { id: 42, slug: 'hello-edge' })).toBe(
      'https://blog.example.com/p/42',
    )
  })

  it('fills in both, each as often as it appears', () => {
    const settings = { postUrlTemplate: 'https://blog.example.com/{id}/{slug}?ref={slug}&id={id}' }
    expect(postUrl(settings, { id: 7, slug: 'a-b' })).toBe('https://blog.example.com/7/a-b?ref=a-b&id=7')
  })

  it('leaves the rest of the template alone', () => {
    const settings = { postUrlTemplate: 'https://blog.example.com/{year}/{slug}.html' }
    expect(postUrl(settings, { id: 1, slug: 'x' })).toBe('https://blog.example.com/{year}/x.html')
  })
})
