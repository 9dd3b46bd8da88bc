import { describe, it } from 'vitest'
import { parseFeed } from '@rowanmanning/feed-parser'
import { atomXml } from './atom'

describe('probe', () => {
  it('parses', ({ expect }) => {
    const xml = atomXml({
      id: 'https://b.example/',
      title: 'T <&> 😀 \u0001',
      self: 'https://x/feed',
      home: 'https://b.example/',
      entries: [
        {
          id: 'tag:b.example,2026-01-01:posts/1',
          title: 'a < b & c 😀\u0001',
          content: 'body',
          link: 'https://b.example/posts/a',
          author: 'al',
          published: new Date(0),
          updated: new Date(1000),
        },
      ],
    })
    const feed = parseFeed(xml)
    console.log(JSON.stringify(feed, null, 1))
    expect(feed.title).toBeTruthy()
  })
})
