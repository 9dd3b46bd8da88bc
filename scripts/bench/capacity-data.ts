// The rows `npm run capacity` (scripts/bench/capacity.ts) inserts: deterministic (a seeded PRNG,
// the same rows on every run, so runs compare) and realistic (names, emails, a Zipf-distributed
// vocabulary for FTS5, sizes and shapes as the API writes them).

/** mulberry32: the same rows on every run, so runs compare. */
function prng(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const random = prng(20_261_130)
const between = (low: number, high: number): number => low + Math.floor(random() * (high - low + 1))
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T
const chance = (p: number): boolean => random() < p

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const base64url = (length: number): string =>
  Array.from({ length }, () => BASE64URL[Math.floor(random() * 64)]).join('')
const hex = (length: number): string =>
  Array.from({ length }, () => '0123456789abcdef'[Math.floor(random() * 16)]).join('')
/** A random (version 4) UUID, as crypto.randomUUID() writes sids and jtis. */
const uuid = (): string => `${hex(8)}-${hex(4)}-4${hex(3)}-${'89ab'[between(0, 3)]}${hex(3)}-${hex(12)}`
/** The stored password format: pbkdf2-sha256$100000$<16-byte salt>$<32-byte hash>, base64url. */
const passwordHash = (): string => `pbkdf2-sha256$100000$${base64url(22)}$${base64url(43)}`
/** A SHA-256 in base64url, as one-time token and unsubscribe token hashes are stored. */
const sha256 = (): string => base64url(43)

const FIRST = [
  'maria',
  'james',
  'aiko',
  'lucas',
  'fatima',
  'noah',
  'elena',
  'omar',
  'sofia',
  'liam',
  'chen',
  'amara',
  'mateo',
  'ingrid',
  'ravi',
  'zoe',
  'pierre',
  'hana',
  'diego',
  'olga',
  'kwame',
  'lena',
  'yusuf',
  'clara',
  'tomas',
  'mei',
  'arjun',
  'nora',
]
const LAST = [
  'garcia',
  'smith',
  'tanaka',
  'silva',
  'khan',
  'johnson',
  'rossi',
  'haddad',
  'novak',
  'murphy',
  'wang',
  'okafor',
  'lopez',
  'larsen',
  'patel',
  'martin',
  'dubois',
  'kim',
  'fernandez',
  'ivanova',
  'mensah',
  'schmidt',
  'demir',
  'moreau',
]
const DOMAINS = [
  'example.com',
  'mail.example.org',
  'example.net',
  'post.example.co.uk',
  'inbox.example.de',
  'example.io',
]
const capitalise = (word: string): string => word.charAt(0).toUpperCase() + word.slice(1)

/** English function words first, then 20 000 synthetic words: a Zipf-distributed vocabulary for FTS5. */
const COMMON = (
  'the of and to a in is it you that he was for on are with as his they be at one have this from or had by hot word but ' +
  'what some we can out other were all there when up use your how said an each she which do their time if will way about ' +
  'many then them write would like so these her long make thing see him two has look more day could go come did number ' +
  'sound no most people my over know water than call first who may down side been now find any new work part take get ' +
  'place made live where after back little only round man year came show every good me give our under name very through ' +
  'just form sentence great think say help low line differ turn cause much mean before move right boy old too same tell ' +
  'edge worker database query cache token session search index post user request response latency deploy replica'
).split(' ')
const SYLLABLES = [
  'ka',
  'lo',
  'mi',
  'ne',
  'ro',
  'sa',
  'ti',
  'vu',
  'ber',
  'con',
  'dex',
  'fin',
  'gra',
  'hol',
  'ist',
  'jun',
  'lex',
  'mor',
  'nal',
  'pre',
  'quo',
  'ral',
  'ster',
  'tor',
  'und',
  'ver',
  'wick',
  'al',
  'en',
  'or',
  'tion',
  'ment',
  'ly',
  'ing',
]
const VOCABULARY = [
  ...new Set([
    ...COMMON,
    ...Array.from({ length: 26_000 }, () => Array.from({ length: between(2, 4) }, () => pick(SYLLABLES)).join('')),
  ]),
].slice(0, COMMON.length + 20_000)
const ZIPF_CDF = (() => {
  const weights = VOCABULARY.map((_, rank) => 1 / (rank + 1))
  const total = weights.reduce((sum, w) => sum + w, 0)
  let running = 0
  return weights.map((w) => (running += w / total))
})()
function word(): string {
  const r = random()
  let low = 0
  let high = ZIPF_CDF.length - 1
  while (low < high) {
    const mid = (low + high) >> 1
    if ((ZIPF_CDF[mid] ?? 1) < r) low = mid + 1
    else high = mid
  }
  return VOCABULARY[low] ?? 'edge'
}

/** About 60 characters. */
export function title(): string {
  const words = [capitalise(word())]
  while (words.join(' ').length < 58) words.push(word())
  return words.join(' ').slice(0, 60).trimEnd()
}

/** 1–2 KB of prose: sentences of 6–22 words, paragraphs of 3–6 sentences. */
export function body(): string {
  const target = between(1024, 2048)
  const paragraphs: string[] = []
  let length = 0
  while (length < target) {
    const sentences = Array.from({ length: between(3, 6) }, () => {
      const words = Array.from({ length: between(6, 22) }, word)
      return `${capitalise(words.join(' '))}${pick(['.', '.', '.', '?', '!'])}`
    })
    const paragraph = sentences.join(' ')
    paragraphs.push(paragraph)
    length += paragraph.length + 2
  }
  return paragraphs.join('\n\n').slice(0, target).trimEnd()
}

// ---- the tables ------------------------------------------------------------------------------

export type Value = string | number | null

export interface TableLoad {
  table: string
  /** What one row is, for the report. */
  what: string
  rows: number
  columns: string[]
  row: (index: number) => Value[]
}

/** Rows per half: `posts` for posts, `rows` for every other table. */
export interface RowCounts {
  posts: number
  rows: number
}

const DAY = 86_400_000
const epoch = Date.UTC(2024, 0, 1)
// Posts, sessions and tokens refer to users and subscribers already generated.
let userCount = 0
let subscriberCount = 0
const person = (n: number) => ({ first: pick(FIRST), last: pick(LAST), n })

function usersLoad(counts: RowCounts): TableLoad {
  return {
    table: 'users',
    what: 'user (username, email, PBKDF2 hash, username key; 4 unique/keyset indexes)',
    rows: counts.rows,
    columns: [
      'username',
      'username_key',
      'email',
      'email_verified',
      'is_admin',
      'password_hash',
      'created_at',
      'updated_at',
      'last_login_at',
    ],
    row: (i) => {
      const p = person(i)
      const username = `${capitalise(p.first)}${capitalise(p.last)}${p.n}`
      const createdAt = epoch + i * 60_000
      userCount = Math.max(userCount, i + 1)
      return [
        username,
        username.toLowerCase(),
        `${p.first}.${p.last}.${p.n}@${pick(DOMAINS)}`,
        chance(0.85) ? 1 : 0,
        0,
        passwordHash(),
        createdAt,
        createdAt + between(0, 30) * DAY,
        chance(0.7) ? createdAt + between(1, 60) * DAY : null,
      ]
    },
  }
}

function postsLoad(counts: RowCounts): TableLoad {
  return {
    table: 'posts',
    what: 'post (60-char title, 1–2 KB body) with its FTS5 index and 2 keyset indexes',
    rows: counts.posts,
    columns: ['author_id', 'title', 'body', 'created_at', 'updated_at'],
    row: (i) => {
      const createdAt = epoch + i * 120_000
      return [
        between(1, userCount),
        title(),
        body(),
        createdAt,
        chance(0.2) ? createdAt + between(1, 10) * DAY : createdAt,
      ]
    },
  }
}

function subscribersLoad(counts: RowCounts): TableLoad {
  return {
    table: 'subscribers',
    what: 'subscriber (email, name, status, unsubscribe token hash; 4 indexes)',
    rows: counts.rows,
    columns: [
      'email',
      'name',
      'status',
      'created_at',
      'updated_at',
      'confirmed_at',
      'unsubscribed_at',
      'unsubscribe_token_hash',
    ],
    row: (i) => {
      const p = person(i)
      const createdAt = epoch + i * 60_000
      const status = pick([
        'active',
        'active',
        'active',
        'active',
        'active',
        'active',
        'active',
        'pending',
        'pending',
        'unsubscribed',
      ])
      subscriberCount = Math.max(subscriberCount, i + 1)
      return [
        `${p.first}${p.n}.${p.last}@${pick(DOMAINS)}`,
        chance(0.6) ? `${capitalise(p.first)} ${capitalise(p.last)}` : null,
        status,
        createdAt,
        createdAt + DAY,
        status === 'pending' ? null : createdAt + 3_600_000,
        status === 'unsubscribed' ? createdAt + 30 * DAY : null,
        sha256(),
      ]
    },
  }
}

function sessionsLoad(counts: RowCounts): TableLoad {
  return {
    table: 'sessions',
    what: 'login session (uuid sid, current and previous jti; 2 indexes)',
    rows: counts.rows,
    columns: [
      'sid',
      'user_id',
      'current_jti',
      'previous_jti',
      'refresh_issued_at',
      'refresh_expires_at',
      'created_at',
      'rotated_at',
      'revoked_at',
    ],
    row: (i) => {
      const createdAt = epoch + i * 30_000
      const rotated = chance(0.7)
      const issuedAt = rotated ? createdAt + between(1, 20) * DAY : createdAt
      return [
        uuid(),
        between(1, userCount),
        uuid(),
        rotated ? uuid() : null,
        issuedAt,
        issuedAt + DAY,
        createdAt,
        rotated ? issuedAt : null,
        chance(0.1) ? issuedAt + 3_600_000 : null,
      ]
    },
  }
}

function oneTimeTokensLoad(counts: RowCounts): TableLoad {
  return {
    table: 'one_time_tokens',
    what: 'one-time token (SHA-256, purpose, recipient; 4 indexes)',
    rows: counts.rows,
    columns: ['token_hash', 'purpose', 'user_id', 'subscriber_id', 'email', 'created_at', 'expires_at', 'used_at'],
    row: (i) => {
      const p = person(i)
      const purpose = pick(['email_verification', 'email_verification', 'password_reset', 'subscription_confirmation'])
      const createdAt = epoch + i * 30_000
      const forUser = purpose !== 'subscription_confirmation'
      return [
        sha256(),
        purpose,
        forUser ? between(1, userCount) : null,
        forUser ? null : between(1, subscriberCount),
        `${p.first}.${p.last}.${p.n}@${pick(DOMAINS)}`,
        createdAt,
        createdAt + (purpose === 'password_reset' ? 3_600_000 : DAY),
        chance(0.6) ? createdAt + 600_000 : null,
      ]
    },
  }
}

function emailOutboxLoad(counts: RowCounts): TableLoad {
  return {
    table: 'email_outbox',
    what: 'queued email (recipient, subject, ~400-byte text with a link, headers; 1 index)',
    rows: counts.rows,
    columns: [
      'recipient',
      'subject',
      'text',
      'headers',
      'status',
      'attempts',
      'next_attempt_at',
      'last_error',
      'created_at',
      'sent_at',
    ],
    row: (i) => {
      const p = person(i)
      const createdAt = epoch + i * 30_000
      const base = 'https://blog.example.com'
      const subscription = chance(0.5)
      const link = `${base}/${subscription ? 'confirm-subscription' : 'verify-email'}?token=${base64url(43)}`
      const unsubscribe = `${base}/unsubscribe?token=${base64url(43)}`
      const text = subscription
        ? `Hello ${capitalise(p.first)},\n\nPlease confirm your subscription to the edgepress mailing list:\n${link}\n\nIf you did not ask to subscribe, ignore this email and you will hear nothing more.\nTo unsubscribe at any time: ${unsubscribe}`
        : `Hello ${capitalise(p.first)}${capitalise(p.last)}${p.n},\n\nPlease confirm that this is your email address by opening this link:\n${link}\n\nThe link is valid for 24 hours. If you did not create an edgepress account, ignore this email.`
      const sent = chance(0.97)
      return [
        `${p.first}.${p.last}.${p.n}@${pick(DOMAINS)}`,
        subscription ? 'Confirm your subscription to edgepress' : 'Confirm your email address for edgepress',
        text,
        subscription ? JSON.stringify({ 'List-Unsubscribe': `<${unsubscribe}>` }) : '{}',
        sent ? 'sent' : 'pending',
        sent ? 1 : 0,
        createdAt,
        null,
        createdAt,
        sent ? createdAt + 2_000 : null,
      ]
    },
  }
}

/** The tables to measure, in order (posts need users, one-time tokens need users and subscribers). */
export function tables(counts: RowCounts): TableLoad[] {
  return [usersLoad, postsLoad, subscribersLoad, sessionsLoad, oneTimeTokensLoad, emailOutboxLoad].map((load) =>
    load(counts),
  )
}
