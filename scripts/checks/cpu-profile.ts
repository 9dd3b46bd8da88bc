// The CPU profile `wrangler check startup` writes (V8's .cpuprofile), and how `npm run budget`
// counts its samples.

export interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}

export interface ProfileNode {
  id: number
  callFrame: CallFrame
  hitCount?: number
  children?: number[]
}

export interface CpuProfile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples?: number[]
  timeDeltas?: number[]
}

/**
 * Self time per sample in µs: a sample lasts until the next one, as DevTools counts it, except the
 * last. DevTools gives the last one the time up to the profile's end, and in `wrangler check
 * startup` that tail is wrangler stopping the profiler after evaluation: 35–45 ms whatever the
 * bundle (a one-line worker's profile is a single sample of 44–48 ms, idle), which was most of
 * every figure and made the check fail at random on a busy machine.
 * The last sample counts as one sampling interval, the median of the others.
 */
export function sampleDurations(profile: CpuProfile): Array<{ nodeId: number; micros: number }> {
  const samples = profile.samples ?? []
  const deltas = profile.timeDeltas ?? []
  const timestamps: number[] = []
  let time = profile.startTime
  for (let i = 0; i < samples.length; i += 1) {
    time += deltas[i] ?? 0
    timestamps.push(time)
  }
  const intervals = timestamps.slice(1).map((stamp, i) => stamp - (timestamps[i] ?? stamp))
  const sorted = [...intervals].sort((a, b) => a - b)
  const typicalInterval = sorted[Math.floor(sorted.length / 2)] ?? 0
  return samples.map((nodeId, i) => ({
    nodeId,
    micros: Math.max(0, i + 1 < timestamps.length ? (intervals[i] ?? 0) : typicalInterval),
  }))
}
