// An Atom 1.0 document (RFC 4287), written by hand: the feed is small and fixed, and a generator
// library would cost bundle and start-up for a few lines of XML. Every text goes through
// xmlText(), which escapes markup and drops what XML 1.0 cannot carry at all.

export interface AtomEntry {
  /** A permanent, unique IRI: it never changes, whatever is edited. */
  id: string
  title: string
  /** The body, as plain text. */
  content: string
  /** Where the post is read (rel="alternate"). */
  link: string
  author: string
  published: Date
  updated: Date
}

export interface AtomFeed {
  id: string
  title: string
  /** The feed's own URL (rel="self"). */
  self: string
  /** The blog's home page (rel="alternate"). */
  home: string
  /** Newest first. */
  entries: AtomEntry[]
}

// Characters XML 1.0 allows (§2.2): tab, LF, CR, U+0020–U+D7FF, U+E000–U+FFFD, U+10000–U+10FFFF.
// Anything else (other controls, lone surrogates, U+FFFE/FFFF) would make the document
// ill-formed, so it is dropped.
const NOT_XML_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu

/** Text for an element or a double-quoted attribute. */
export function xmlText(text: string): string {
  return text
    .replace(NOT_XML_CHAR, '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
}

/** The feed's `updated`: its newest entry's, or the epoch for a feed with no entry yet. */
function feedUpdated(feed: AtomFeed): Date {
  const times = feed.entries.map((entry) => entry.updated.getTime())
  return new Date(times.length === 0 ? 0 : Math.max(...times))
}

function entryXml(entry: AtomEntry): string {
  return [
    '  <entry>',
    `    <id>${xmlText(entry.id)}</id>`,
    `    <title type="text">${xmlText(entry.title)}</title>`,
    `    <link rel="alternate" type="text/html" href="${xmlText(entry.link)}"/>`,
    `    <published>${entry.published.toISOString()}</published>`,
    `    <updated>${entry.updated.toISOString()}</updated>`,
    `    <author><name>${xmlText(entry.author)}</name></author>`,
    `    <content type="text">${xmlText(entry.content)}</content>`,
    '  </entry>',
  ].join('\n')
}

export function atomXml(feed: AtomFeed): string {
  return [
    '<?xml version="1.0" encoding="utf-8"?>',
    '<feed xmlns="http://www.w3.org/2005/Atom">',
    `  <id>${xmlText(feed.id)}</id>`,
    `  <title type="text">${xmlText(feed.title)}</title>`,
    `  <updated>${feedUpdated(feed).toISOString()}</updated>`,
    `  <link rel="self" type="application/atom+xml" href="${xmlText(feed.self)}"/>`,
    `  <link rel="alternate" type="text/html" href="${xmlText(feed.home)}"/>`,
    '  <generator>edgepress</generator>',
    ...feed.entries.map(entryXml),
    '</feed>',
    '',
  ].join('\n')
}
