import { describe, expect, it } from 'vitest'
import { groupCommit } from './group-commit'

/** A turn of the event loop: what the group commit waits before an idle flush. */
const nextTurn = () => new Promise((resolve) => setTimeout(resolve, 0))

/** A flush that records each group and answers when released. */
function recordingFlush() {
  const groups: number[][] = []
  const releases: (() => void)[] = []
  const flush = (requests: number[]) => {
    groups.push(requests)
    return new Promise<string[]>((resolve) => releases.push(() => resolve(requests.map((n) => `r${n}`))))
  }
  // A few turns for the next flush to start; a test that expects one too many fails here.
  const releaseNext = async () => {
    for (let turn = 0; turn < 10 && releases.length === 0; turn++) await nextTurn()
    const release = releases.shift()
    if (release === undefined) throw new Error('no flush is waiting')
    release()
  }
  return { groups, flush, releaseNext }
}

describe('groupCommit', () => {
  it('flushes a lone call on the next turn of the event loop', async () => {
    const recording = recordingFlush()
    const call = groupCommit({ flush: recording.flush, maxGroup: 10 })
    const result = call(1)
    expect(recording.groups).toEqual([])
    await recording.releaseNext()
    expect(await result).toBe('r1')
    expect(recording.groups).toEqual([[1]])
  })

  it('puts calls made in the same turn in one flush, each answered with its own result', async () => {
    const recording = recordingFlush()
    const call = groupCommit({ flush: recording.flush, maxGroup: 10 })
    const results = [1, 2, 3].map((n) => call(n))
    await recording.releaseNext()
    expect(await Promise.all(results)).toEqual(['r1', 'r2', 'r3'])
    expect(recording.groups).toEqual([[1, 2, 3]])
  })

  it('gathers the calls that arrive during a flush into the next one', async () => {
    const recording = recordingFlush()
    const call = groupCommit({ flush: recording.flush, maxGroup: 10 })
    const first = call(1)
    await nextTurn()
    expect(recording.groups).toEqual([[1]])
    const later = [2, 3, 4].map((n) => call(n))
    await recording.releaseNext()
    await recording.releaseNext()
    expect(await Promise.all([first, ...later])).toEqual(['r1', 'r2', 'r3', 'r4'])
    expect(recording.groups).toEqual([[1], [2, 3, 4]])
  })

  it('never puts more than maxGroup requests in one flush', async () => {
    const recording = recordingFlush()
    const call = groupCommit({ flush: recording.flush, maxGroup: 2 })
    const results = [1, 2, 3, 4, 5].map((n) => call(n))
    for (let flush = 0; flush < 3; flush++) await recording.releaseNext()
    expect(await Promise.all(results)).toHaveLength(5)
    expect(recording.groups).toEqual([[1, 2], [3, 4], [5]])
  })

  it('fails every request of a failed flush, and the next group still runs', async () => {
    let calls = 0
    const call = groupCommit<number, number>({
      flush: async (requests) => {
        calls++
        if (calls === 1) throw new Error('D1 is down')
        return requests
      },
      maxGroup: 10,
    })
    const failing = [call(1), call(2)]
    for (const result of failing) await expect(result).rejects.toThrow('D1 is down')
    expect(await call(3)).toBe(3)
  })

  it('fails a flush that answers the wrong number of results', async () => {
    const call = groupCommit<number, number>({ flush: async () => [], maxGroup: 10 })
    await expect(call(1)).rejects.toThrow('one result per request')
  })
})
