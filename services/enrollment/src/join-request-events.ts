/**
 * Wakes WaitForApproval streams when their join request changes. Changes made in this process are
 * signalled after their transaction commits (tx.afterCommit), so a woken stream always reads the new
 * state; changes made by another replica are picked up by the stream's poll.
 */
export class JoinRequestEvents {
  private readonly waiters = new Map<string, Set<() => void>>();

  /** Wakes every stream waiting on this join request. */
  changed(joinRequestId: string): void {
    const set = this.waiters.get(joinRequestId);
    if (!set) return;
    this.waiters.delete(joinRequestId);
    for (const wake of set) wake();
  }

  /** Resolves on a change, after `timeoutMs`, or when `signal` aborts, whichever comes first. */
  next(joinRequestId: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      let set = this.waiters.get(joinRequestId);
      if (!set) this.waiters.set(joinRequestId, (set = new Set()));
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        const current = this.waiters.get(joinRequestId);
        current?.delete(done);
        if (current?.size === 0) this.waiters.delete(joinRequestId);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      signal.addEventListener("abort", done, { once: true });
      set.add(done);
    });
  }
}
