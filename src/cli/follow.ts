// Following a stream of events until it ends, or until the user presses Ctrl-C: then the
// stream is cancelled and the command ends cleanly (exit 0).

/** Runs `follow` with a signal that SIGINT aborts; an error caused by that abort is not an error. */
export async function untilInterrupted(follow: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const controller = new AbortController();
  const interrupt = (): void => controller.abort();
  process.once("SIGINT", interrupt);
  try {
    await follow(controller.signal);
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  } finally {
    process.off("SIGINT", interrupt);
  }
}
