import fc from 'fast-check'
import { XMLValidator } from 'fast-xml-parser'
import { atomParser, feedParser, isXmlChar, textOf } from '../../../test/atom-xml'
import type { XmlLink, XmlText } from '../../../test/atom-xml'
import { describe, expect, it } from 'vitest'
import { atomXml, xmlText } from './atom'
import type { AtomEntry, AtomFeed } from './atom'

// The hand-written Atom document (src/routes/feed/atom.ts): its pure functions, checked against
// the shape of RFC 4287, a real XML parser (fast-xml-parser, with the XML 1.0 Char production
// checked here, which its validator does not) and a real feed reader (@rowanmanning/feed-parser).

/** `text` without what XML cannot carry: what a reader should get back. */
function xmlCharsOf(text: string): string {
  return Array.from(text)
    .filter((char) => isXmlChar(char.codePointAt(0)!))
    .join('')
}

/** XML 1.0 §2.11: a parser reads CR LF and a lone CR as LF. */
const endOfLines = (text: string) => text.replace(/\r\n?/g, '\n')

function expectWellFormed(xml: string): void {
  expect(XMLValidator.validate(xml)).toBe(true)
  const bad = Array.from(xml).filter((char) => !isXmlChar(char.codePointAt(0)!))
  expect(bad.map((char) => char.codePointAt(0)!.toString(16))).toEqual([])
}

interface XmlEntry {
  id: XmlText
  title: XmlText
  link: XmlLink[]
  published: string
  updated: string
  author: { name: XmlText }
  content: XmlText
}
interface XmlFeed {
  '@xmlns': string
  id: XmlText
  title: XmlText
  updated: string
  link: XmlLink[]
  generator: XmlText
  entry?: XmlEntry[]
}

/** The document, checked to be well-formed, as fast-xml-parser reads it. */
function parse(xml: string): XmlFeed {
  expectWellFormed(xml)
  return (atomParser.parse(xml) as { feed: XmlFeed }).feed
}

function entry(overrides: Partial<AtomEntry> = {}): AtomEntry {
  return {
    id: 'tag:blog.example.com,2026-12-01:posts/42',
    title: 'Hello, edge',
    content: 'Posts are stored in D1.',
    link: 'https://blog.example.com/posts/hello-edge',
    author: 'alice',
    published: new Date('2026-12-01T10:00:00.000Z'),
    updated: new Date('2026-12-02T11:30:00.000Z'),
    ...overrides,
  }
}

function feed(entries: AtomEntry[], overrides: Partial<AtomFeed> = {}): AtomFeed {
  return {
    id: 'https://blog.example.com/',
    title: 'edgepress',
    self: 'https://api.example.com/api/v1/feed',
    home: 'https://blog.example.com/',
    entries,
    ...overrides,
  }
}

const HOSTILE = [
  ['markup', '<script>alert("x")</script> & <b>bold</b>'],
  ['entities, raw and escaped', '&amp; &lt; &#60; &#x3C; &nbsp; &unknown;'],
  ['quotes and apostrophes', `"double" 'single' “curly”`],
  ['CDATA end', 'a ]]> b'],
  ['emoji', '👩‍💻 Hello 🎉🇫🇷 👍🏽'],
  ['right-to-left text', 'مرحبا \u202eevil\u202c'],
  ['control characters', 'a\u0000b\u0001c\u0008d\u000be\u000cf\u001fg'],
  ['U+FFFE and U+FFFF', 'x\ufffey\uffffz'],
  ['lone surrogates', 'hi\ud800gh \udfffow'],
  ['tabs and line breaks', 'tab\there\nnew line'],
] as const

describe('xmlText', () => {
  it('escapes &, <, > and "', () => {
    expect(xmlText(`a & b < c > d "e" 'f'`)).toBe(`a &amp; b &lt; c &gt; d &quot;e&quot; 'f'`)
  })

  it('escapes & first, so text that looks like an entity stays text', () => {
    expect(xmlText('&lt;b&gt; &amp; &#60;')).toBe('&amp;lt;b&amp;gt; &amp;amp; &amp;#60;')
  })

  it('keeps tab, line breaks and every character XML allows, astral ones included', () => {
    const kept = 'tab\tLF\nCR\r U+2028\u2028 é 東京 \ud7ff \ue000 \ufffd 😀 \u{10ffff}'
    expect(xmlText(kept)).toBe(kept)
  })

  it('drops C0 controls other than tab, LF and CR', () => {
    const controls = Array.from({ length: 0x20 }, (_, code) => String.fromCharCode(code)).join('')
    expect(xmlText(`[${controls}]`)).toBe('[\t\n\r]')
  })

  it('drops U+FFFE, U+FFFF and lone surrogates, keeping surrogate pairs', () => {
    expect(xmlText('a\ufffeb\uffffc')).toBe('abc')
    expect(xmlText('a\ud800b\udc00c\udbff')).toBe('abc')
    expect(xmlText('pair \ud83d\ude00 kept')).toBe('pair 😀 kept')
  })

  it('gives only XML characters and no raw markup, and decodes back to the input less what XML cannot carry (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (text) => {
        const escaped = xmlText(text)
        expect(xmlCharsOf(escaped)).toBe(escaped)
        expect(escaped).not.toMatch(/[<>"]|&(?!(amp|lt|gt|quot);)/)
        const decoded = escaped
          .replaceAll('&lt;', '<')
          .replaceAll('&gt;', '>')
          .replaceAll('&quot;', '"')
          .replaceAll('&amp;', '&')
        expect(decoded).toBe(xmlCharsOf(text))
      }),
      { numRuns: 200 },
    )
  })
})

describe('atomXml', () => {
  it('writes the RFC 4287 document: declaration, feed metadata, then each entry', () => {
    const xml = atomXml(feed([entry()]))
    expect(xml).toBe(
      [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        '  <id>https://blog.example.com/</id>',
        '  <title type="text">edgepress</title>',
        '  <updated>2026-12-02T11:30:00.000Z</updated>',
        '  <link rel="self" type="application/atom+xml" href="https://api.example.com/api/v1/feed"/>',
        '  <link rel="alternate" type="text/html" href="https://blog.example.com/"/>',
        '  <generator>edgepress</generator>',
        '  <entry>',
        '    <id>tag:blog.example.com,2026-12-01:posts/42</id>',
        '    <title type="text">Hello, edge</title>',
        '    <link rel="alternate" type="text/html" href="https://blog.example.com/posts/hello-edge"/>',
        '    <published>2026-12-01T10:00:00.000Z</published>',
        '    <updated>2026-12-02T11:30:00.000Z</updated>',
        '    <author><name>alice</name></author>',
        '    <content type="text">Posts are stored in D1.</content>',
        '  </entry>',
        '</feed>',
        '',
      ].join('\n'),
    )
    expectWellFormed(xml)
  })

  it('parses as the feed it was given', () => {
    const parsed = parse(atomXml(feed([entry()])))
    expect(parsed['@xmlns']).toBe('http://www.w3.org/2005/Atom')
    expect(textOf(parsed.id)).toBe('https://blog.example.com/')
    expect(textOf(parsed.title)).toBe('edgepress')
    expect(parsed.link).toEqual([
      { '@rel': 'self', '@type': 'application/atom+xml', '@href': 'https://api.example.com/api/v1/feed' },
      { '@rel': 'alternate', '@type': 'text/html', '@href': 'https://blog.example.com/' },
    ])
    const [only] = parsed.entry!
    expect(only).toMatchObject({
      published: '2026-12-01T10:00:00.000Z',
      updated: '2026-12-02T11:30:00.000Z',
      link: [{ '@rel': 'alternate', '@type': 'text/html', '@href': 'https://blog.example.com/posts/hello-edge' }],
    })
    expect(textOf(only!.id)).toBe('tag:blog.example.com,2026-12-01:posts/42')
    expect(textOf(only!.author.name)).toBe('alice')
    expect(textOf(only!.content)).toBe('Posts are stored in D1.')
    expect(only!.content).toMatchObject({ '@type': 'text' })
  })

  it('keeps the entries in the order given (newest first is the caller’s)', () => {
    const entries = [3, 1, 2].map((n) => entry({ id: `tag:blog.example.com,2026-12-01:posts/${n}`, title: `#${n}` }))
    const parsed = parse(atomXml(feed(entries)))
    expect(parsed.entry!.map((e) => textOf(e.title))).toEqual(['#3', '#1', '#2'])
  })

  it('is updated when its newest entry was, whichever position that entry has', () => {
    const entries = [
      entry({ updated: new Date('2026-12-03T00:00:00.000Z') }),
      entry({ updated: new Date('2026-12-09T08:07:06.005Z') }),
      entry({ updated: new Date('2026-12-01T00:00:00.000Z') }),
    ]
    expect(parse(atomXml(feed(entries))).updated).toBe('2026-12-09T08:07:06.005Z')
  })

  it('is a well-formed feed with no entry, updated at the epoch, when there is nothing published', () => {
    const xml = atomXml(feed([]))
    const parsed = parse(xml)
    expect(parsed.updated).toBe('1970-01-01T00:00:00.000Z')
    expect(parsed.entry).toBeUndefined()
    expect(xml).not.toContain('<entry>')
  })

  it.for(HOSTILE)('carries %s in every text field and attribute, well-formed', ([, text]) => {
    const hostile = entry({
      id: `tag:blog.example.com,2026-12-01:posts/1?${text}`,
      title: text,
      content: `${text}\n${text}`,
      author: text,
      link: `https://blog.example.com/posts/a?q=${text}`,
    })
    const xml = atomXml(feed([hostile], { title: text, self: `https://api.example.com/feed?${text}` }))
    const parsed = parse(xml)
    const expected = (value: string) => endOfLines(xmlCharsOf(value))
    expect(textOf(parsed.title)).toBe(expected(text))
    expect(parsed.link[0]!['@href']).toBe(expected(`https://api.example.com/feed?${text}`))
    const [only] = parsed.entry!
    expect(textOf(only!.title)).toBe(expected(text))
    expect(textOf(only!.content)).toBe(expected(`${text}\n${text}`))
    expect(textOf(only!.author.name)).toBe(expected(text))
    expect(textOf(only!.id)).toBe(expected(hostile.id))
  })

  it('round-trips any title and content through a real XML parser, less what XML cannot carry (property)', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary', maxLength: 80 }),
        fc.string({ unit: 'binary', maxLength: 200 }),
        (title, content) => {
          const parsed = parse(atomXml(feed([entry({ title, content })], { title })))
          const expected = (value: string) => endOfLines(xmlCharsOf(value))
          expect(textOf(parsed.title)).toBe(expected(title))
          expect(textOf(parsed.entry![0]!.title)).toBe(expected(title))
          expect(textOf(parsed.entry![0]!.content)).toBe(expected(content))
        },
      ),
      { numRuns: 200 },
    )
  })
})

describe('atomXml read by a feed reader (@rowanmanning/feed-parser)', () => {
  it('reads as an Atom 1.0 feed with its metadata and entries', () => {
    const second = entry({
      id: 'tag:blog.example.com,2026-11-30:posts/41',
      title: 'Older',
      link: 'https://blog.example.com/posts/older',
      published: new Date('2026-11-30T09:00:00.000Z'),
      updated: new Date('2026-11-30T09:00:00.000Z'),
    })
    const parsed = feedParser.parseFeed(atomXml(feed([entry(), second])))
    expect(parsed.meta).toEqual({ type: 'atom', version: '1.0' })
    expect(parsed.title).toBe('edgepress')
    expect(parsed.url).toBe('https://blog.example.com/')
    expect(parsed.self).toBe('https://api.example.com/api/v1/feed')
    expect(parsed.updated?.toISOString()).toBe('2026-12-02T11:30:00.000Z')
    expect(parsed.generator?.label).toBe('edgepress')
    expect(
      parsed.items.map((item) => ({
        id: item.id,
        title: item.title,
        url: item.url,
        content: item.content,
        published: item.published?.toISOString(),
        updated: item.updated?.toISOString(),
        authors: item.authors.map((author) => author.name),
      })),
    ).toEqual([
      {
        id: 'tag:blog.example.com,2026-12-01:posts/42',
        title: 'Hello, edge',
        url: 'https://blog.example.com/posts/hello-edge',
        content: 'Posts are stored in D1.',
        published: '2026-12-01T10:00:00.000Z',
        updated: '2026-12-02T11:30:00.000Z',
        authors: ['alice'],
      },
      {
        id: 'tag:blog.example.com,2026-11-30:posts/41',
        title: 'Older',
        url: 'https://blog.example.com/posts/older',
        content: 'Posts are stored in D1.',
        published: '2026-11-30T09:00:00.000Z',
        updated: '2026-11-30T09:00:00.000Z',
        authors: ['alice'],
      },
    ])
  })

  // Not the entities: the reader decodes text a second time as HTML (`&amp;lt;` reads `<`), where
  // RFC 4287 text is decoded once; fast-xml-parser above reads them back exactly.
  const readable = HOSTILE.filter(([name]) => name !== 'entities, raw and escaped')

  it.for(readable)('reads %s in titles and content back as text', ([, text]) => {
    const xml = atomXml(feed([entry({ title: text, content: text, author: text })], { title: text }))
    const parsed = feedParser.parseFeed(xml)
    // The reader trims text; otherwise it reads what XML can carry.
    const expected = endOfLines(xmlCharsOf(text)).trim()
    expect(parsed.title?.trim()).toBe(expected)
    expect(parsed.items[0]!.title?.trim()).toBe(expected)
    expect(parsed.items[0]!.content?.trim()).toBe(expected)
    expect(parsed.items[0]!.authors[0]?.name?.trim()).toBe(expected)
  })
})
