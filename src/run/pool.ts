/**
 * Runs jobs with at most `limit` at a time, starting each only once its dependencies have settled
 * (`ready`). Jobs are started in list order among those ready, so builders listed first go first.
 */
export async function runPool(
  jobs: { ready: () => Promise<unknown>; run: () => Promise<void> }[],
  limit: number,
  signal: AbortSignal,
): Promise<void> {
  let running = 0;
  const waiting: (() => void)[] = [];
  const slot = async () => {
    while (running >= limit) await new Promise<void>((r) => waiting.push(r));
    running++;
  };
  const free = () => {
    running--;
    waiting.shift()?.();
  };
  // A job waiting on one that an interrupt stopped before it ran would wait forever.
  const aborted = new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
  await Promise.all(
    jobs.map(async (job) => {
      await Promise.race([job.ready(), aborted]);
      if (signal.aborted) return;
      await slot();
      try {
        if (!signal.aborted) await job.run();
      } finally {
        free();
      }
    }),
  );
}
