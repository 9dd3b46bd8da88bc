// What the feed tests (src/routes/feed/) read Atom with: fast-xml-parser, with the XML 1.0 Char
// production checked here (its validator does not), and a real feed reader.
import { XMLParser } from 'fast-xml-parser'

/**
 * @rowanmanning/feed-parser, a feed reader. It is CommonJS, and its require()s of html-entities
 * and fast-xml-parser load in workerd only because vitest.config.ts aliases them to their
 * CommonJS builds.
 */
export const feedParser = await import('@rowanmanning/feed-parser')

/** XML 1.0 §2.2 Char, written out independently of atom.ts's regular expression. */
export function isXmlChar(codePoint: number): boolean {
  return (
    codePoint === 0x9 ||
    codePoint === 0xa ||
    codePoint === 0xd ||
    (codePoint >= 0x20 && codePoint <= 0xd7ff) ||
    (codePoint >= 0xe000 && codePoint <= 0xfffd) ||
    (codePoint >= 0x10000 && codePoint <= 0x10ffff)
  )
}

/** Attributes as `@name`, text as written (no trimming, no number parsing), entries and links as arrays. */
export const atomParser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  trimValues: false,
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: true,
  htmlEntities: false,
  isArray: (name) => name === 'entry' || name === 'link',
})

export type XmlText = string | { '#text'?: string; '@type'?: string }

export interface XmlLink {
  '@rel': string
  '@type': string
  '@href': string
}

/** The text of an element, whether or not it has attributes or any text at all. */
export function textOf(node: XmlText): string {
  return typeof node === 'string' ? node : (node['#text'] ?? '')
}
