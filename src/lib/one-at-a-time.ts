// Runs tasks one after another, in the order they were handed in. For CPU-bound work that awaits
// now and then (WebCrypto calls): run concurrently, every task would finish together at the end;
// in turn, the first is done early and its I/O can start while the others compute.

/** A function that runs each task once the one before it has settled. */
export function oneAtATime(): <Result>(task: () => Promise<Result>) => Promise<Result> {
  let previous: Promise<unknown> = Promise.resolve()
  return (task) => {
    const run = previous.then(task, task)
    previous = run.catch(() => undefined)
    return run
  }
}
