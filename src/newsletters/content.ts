import type { OutgoingEmail } from '../email/transports'

// What a reader receives: the post as text, a link to it on the blog, and the ways out. Pure:
// the unsubscribe tokens are made by the caller (src/lib/unsubscribe-tokens.ts).

export interface NewsletterContent {
  subject: string
  body: string
  postUrl: string
  /** The blog's name (FEED_TITLE), for the footer and List-Id. */
  listName: string
  /** PUBLIC_BASE_URL: the app, which opens unsubscribe links for people. */
  publicBaseUrl: string
  /** The API's origin, which takes the RFC 8058 one-click POST. */
  apiOrigin: string
  from: string
}

/** The list's settings (FEED_TITLE, PUBLIC_BASE_URL, MAIL_FROM) around one post's text and URL. */
export function newsletterContent(
  config: { feedTitle: string; publicBaseUrl: string; mail: { from: string } },
  post: Pick<NewsletterContent, 'subject' | 'body' | 'postUrl' | 'apiOrigin'>,
): NewsletterContent {
  return { ...post, listName: config.feedTitle, publicBaseUrl: config.publicBaseUrl, from: config.mail.from }
}

/** RFC 2919 List-Id: the list's name and a label under the blog's host. */
export function listId(content: Pick<NewsletterContent, 'listName' | 'publicBaseUrl'>): string {
  const name = content.listName.replace(/[<>"\r\n]/g, '').trim()
  return `${name} <newsletter.${new URL(content.publicBaseUrl).hostname}>`
}

/** The email for one recipient (newsletterTemplate, for one email). */
export function newsletterEmail(content: NewsletterContent, to: string, unsubscribeToken: string): OutgoingEmail {
  return newsletterTemplate(content)(to, unsubscribeToken)
}

/**
 * The emails of one post: what every recipient's email shares is made once, and each email adds
 * its recipient and unsubscribe links. `List-Unsubscribe` is the API's one-click URL (RFC 8058: a
 * mail client POSTs `List-Unsubscribe=One-Click` to it, no page, no sign-in),
 * `List-Unsubscribe-Post` says so, and the text's own link opens the app for people.
 */
export function newsletterTemplate(
  content: NewsletterContent,
): (to: string, unsubscribeToken: string) => OutgoingEmail {
  // A title holds no line break a header could carry; the provider gets one line whatever it was.
  const subject = content.subject.replace(/[\r\n]+/g, ' ')
  const listIdHeader = listId(content)
  const text = [
    content.subject,
    '',
    content.body,
    '',
    `Read it on the blog: ${content.postUrl}`,
    '',
    '--',
    `You receive this because you subscribed to ${content.listName}.`,
    'Unsubscribe: ',
  ].join('\n')
  const oneClickBase = `${content.apiOrigin}/api/v1/subscribers/unsubscribe?token=`
  const forPeopleBase = `${content.publicBaseUrl}/unsubscribe?token=`
  return (to, unsubscribeToken) => {
    const token = encodeURIComponent(unsubscribeToken)
    return {
      from: content.from,
      to,
      subject,
      text: `${text}${forPeopleBase}${token}`,
      headers: {
        'List-Unsubscribe': `<${oneClickBase}${token}>`,
        'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click',
        'List-Id': listIdHeader,
      },
    }
  }
}
