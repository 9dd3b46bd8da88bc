import { describe, expect, it } from 'vitest'
import { sampleDurations } from './cpu-profile'
import type { CpuProfile } from './cpu-profile'

const profile = (timeDeltas: number[], endTime: number): CpuProfile => ({
  nodes: [],
  startTime: 0,
  endTime,
  samples: timeDeltas.map((_, i) => i + 1),
  timeDeltas,
})

describe('sampleDurations', () => {
  it('lasts each sample until the next one', () => {
    const durations = sampleDurations(profile([100, 1000, 1200, 1100], 3500))
    expect(durations.slice(0, 3).map((d) => d.micros)).toEqual([1000, 1200, 1100])
  })

  it('counts the last sample as the median interval, not up to the profile’s end (wrangler stopping the profiler)', () => {
    const durations = sampleDurations(profile([100, 1000, 1200, 1100], 3400 + 45_000))
    expect(durations.at(-1)).toEqual({ nodeId: 4, micros: 1100 })
  })

  it('gives a lone sample no time at all', () => {
    expect(sampleDurations(profile([500], 48_000))).toEqual([{ nodeId: 1, micros: 0 }])
  })
})
