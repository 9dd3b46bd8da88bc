import { DurableObject } from 'cloudflare:workers'
import type { Env } from '../config'
import type { BatchResult, DeliveryDeps } from './deliver'
import type { NewsletterBatch } from '../lib/mail-queue-messages'

// One NewsletterSender per newsletter (named by its id): the single place its batches are handed
// to the provider. It keeps one attempt per batch at a time (a redelivered message waits for the
// attempt in flight instead of racing it), and a cancel waits for every attempt in flight before
// it answers, so no email of the newsletter leaves after the cancel's answer. The ledger in D1
// stays the record; this object holds nothing that a restart would lose.
//
// Kept small: it is part of the Worker's entry module, and the work it does is imported on its
// first call (src/index.ts keeps start-up lean).

export class NewsletterSender extends DurableObject<Env> {
  readonly #inFlight = new Map<number, Promise<BatchResult>>()
  /** The cancel under way: a batch arriving meanwhile waits for it, then finds the send cancelled. */
  #cancelling: Promise<boolean> | undefined
  #deps: Promise<DeliveryDeps> | undefined

  async deliver(batch: NewsletterBatch): Promise<BatchResult> {
    // Not acknowledged unseen: if the cancel fails, the send goes on and this batch with it.
    if (this.#cancelling !== undefined) await this.#cancelling.catch(() => undefined)
    const running = this.#inFlight.get(batch.batchNo)
    if (running !== undefined) return running
    const attempt = this.#attempt(batch)
    this.#inFlight.set(batch.batchNo, attempt)
    try {
      return await attempt
    } finally {
      this.#inFlight.delete(batch.batchNo)
    }
  }

  /** Cancels the newsletter in D1, then waits for the attempts in flight: true if it was cancelled now. */
  async cancel(newsletterId: number): Promise<boolean> {
    const cancelling = this.#cancel(newsletterId)
    this.#cancelling = cancelling
    try {
      return await cancelling
    } finally {
      // D1 says cancelled from here on; an attempt that starts later finds it so.
      if (this.#cancelling === cancelling) this.#cancelling = undefined
    }
  }

  async #cancel(newsletterId: number): Promise<boolean> {
    const [{ cancelNewsletter }, { createDb }] = await Promise.all([
      import('../db/newsletters'),
      import('../db/client'),
    ])
    // Only D1: a cancel needs no transport (one refused by the configuration must not block it).
    const cancelled = await cancelNewsletter(createDb(this.env), newsletterId, new Date())
    await Promise.allSettled(this.#inFlight.values())
    return cancelled !== undefined
  }

  async #attempt(batch: NewsletterBatch): Promise<BatchResult> {
    const { deliverBatch } = await import('./deliver')
    return deliverBatch(await this.#depsOnce(), batch, new Date())
  }

  #depsOnce(): Promise<DeliveryDeps> {
    this.#deps ??= import('./deps').then((module) => module.deliveryDeps(this.env))
    return this.#deps
  }
}
