import type { Db } from '../db/client'
import { claimBatches, recordBatches } from '../db/newsletters'
import type { BatchRecipient, SettledBatch } from '../db/newsletters'
import type { NewsletterRow } from '../db/schema'
import { groupCommit } from '../lib/group-commit'

// The ledger as the sending side sees it: claim a batch, record how it went. The queue hands the
// consumer 10 batches at a time and they reach the newsletter's NewsletterSender together; one
// D1 round trip each would queue them on the primary (the claim was most of a batch's time in
// `npm run bench:newsletter`). Grouped, the batches that arrive together are claimed in one round
// trip and recorded in one (src/lib/group-commit.ts). Nothing changes for correctness: every
// statement still changes only the rows in the state it expects.

/** A batch claimed for sending: the newsletter's content, and its recipients in a fixed order. */
export interface ClaimedBatch {
  newsletter: NewsletterRow
  recipients: BatchRecipient[]
}

export interface BatchLedger {
  /** Claims a batch; undefined when its newsletter is gone. */
  claim: (request: { newsletterId: number; batchNo: number; now: Date }) => Promise<ClaimedBatch | undefined>
  record: (request: { newsletterId: number; settled: SettledBatch; now: Date }) => Promise<void>
}

/** Up to 50 batches in one round trip: each statement binds every batch number, and D1 takes at most 100 parameters. */
const MAX_BATCHES_PER_ROUND_TRIP = 50

/** Requests by newsletter (one NewsletterSender only ever sees its own, but nothing depends on it). */
function byNewsletter<Request extends { newsletterId: number }>(requests: Request[]): Map<number, Request[]> {
  const groups = new Map<number, Request[]>()
  for (const request of requests) {
    const group = groups.get(request.newsletterId)
    if (group === undefined) groups.set(request.newsletterId, [request])
    else group.push(request)
  }
  return groups
}

/** The latest of the requests' clocks: a group's rows are stamped when its last member asked. */
const latest = (requests: { now: Date }[]): Date =>
  new Date(Math.max(...requests.map((request) => request.now.getTime())))

export function groupedLedger(db: Db): BatchLedger {
  const claim = groupCommit<Parameters<BatchLedger['claim']>[0], ClaimedBatch | undefined>({
    maxGroup: MAX_BATCHES_PER_ROUND_TRIP,
    flush: async (requests) => {
      const claimed = new Map<number, Awaited<ReturnType<typeof claimBatches>>>()
      await Promise.all(
        [...byNewsletter(requests)].map(async ([newsletterId, group]) => {
          const batchNos = group.map((request) => request.batchNo)
          claimed.set(newsletterId, await claimBatches(db, newsletterId, batchNos, latest(group)))
        }),
      )
      return requests.map((request) => {
        const found = claimed.get(request.newsletterId)
        if (found === undefined) return undefined
        return { newsletter: found.newsletter, recipients: found.recipients.get(request.batchNo) ?? [] }
      })
    },
  })
  const record = groupCommit<Parameters<BatchLedger['record']>[0], void>({
    maxGroup: MAX_BATCHES_PER_ROUND_TRIP,
    flush: async (requests) => {
      await Promise.all(
        [...byNewsletter(requests)].map(([newsletterId, group]) =>
          recordBatches(
            db,
            newsletterId,
            group.map((request) => request.settled),
            latest(group),
          ),
        ),
      )
      return requests.map(() => undefined)
    },
  })
  return { claim, record }
}
