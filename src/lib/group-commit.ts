// Group commit: calls that arrive together go in one flush, and calls that arrive while a flush
// is under way wait and go together in the next. An idle group commit waits one turn of the event
// loop (setTimeout 0, no wall-clock wait) before it flushes, so that calls arriving as separate
// events at the same moment (the 10 batches of a queue delivery, each its own RPC to the
// NewsletterSender) share the first flush too. Each flush is one round trip to the database: a
// burst of N calls costs one or two instead of a queue of N.

interface Waiting<Request, Result> {
  request: Request
  resolve: (result: Result) => void
  reject: (reason: unknown) => void
}

export interface GroupCommitOptions<Request, Result> {
  /** Does a group's work: one result per request, in the requests' order. */
  flush: (requests: Request[]) => Promise<Result[]>
  /** The most requests one flush takes (a statement's bound parameters are limited). */
  maxGroup: number
}

/** A function that queues its request for the next flush; a failed flush fails every request in it. */
export function groupCommit<Request, Result>(
  options: GroupCommitOptions<Request, Result>,
): (request: Request) => Promise<Result> {
  let waiting: Waiting<Request, Result>[] = []
  let flushing = false

  async function drain(): Promise<void> {
    flushing = true
    await new Promise((resolve) => setTimeout(resolve, 0))
    while (waiting.length > 0) {
      const group = waiting.slice(0, options.maxGroup)
      waiting = waiting.slice(group.length)
      try {
        const results = await options.flush(group.map((entry) => entry.request))
        if (results.length !== group.length) throw new Error('group commit: one result per request expected')
        for (const [index, entry] of group.entries()) entry.resolve(results[index] as Result)
      } catch (err) {
        for (const entry of group) entry.reject(err)
      }
    }
    flushing = false
  }

  return (request) =>
    new Promise<Result>((resolve, reject) => {
      waiting.push({ request, resolve, reject })
      if (!flushing) void drain()
    })
}
