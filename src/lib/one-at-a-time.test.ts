import { describe, expect, it } from 'vitest'
import { oneAtATime } from './one-at-a-time'

describe('oneAtATime', () => {
  it('runs each task after the one before it has settled, in the order handed in', async () => {
    const inTurn = oneAtATime()
    const events: string[] = []
    const task = (name: string, turns: number) => async () => {
      events.push(`${name} starts`)
      for (let turn = 0; turn < turns; turn++) await Promise.resolve()
      events.push(`${name} ends`)
      return name
    }
    const results = await Promise.all([inTurn(task('a', 5)), inTurn(task('b', 1)), inTurn(task('c', 3))])
    expect(results).toEqual(['a', 'b', 'c'])
    expect(events).toEqual(['a starts', 'a ends', 'b starts', 'b ends', 'c starts', 'c ends'])
  })

  it('a failing task fails alone: the next one still runs', async () => {
    const inTurn = oneAtATime()
    const failing = inTurn(async () => {
      throw new Error('render failed')
    })
    const next = inTurn(async () => 'rendered')
    await expect(failing).rejects.toThrow('render failed')
    expect(await next).toBe('rendered')
  })
})
