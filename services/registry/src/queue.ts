/**
 * An unbounded push queue read as an async iterable by one consumer: how a streaming handler receives
 * what other parts of the process produce for it (feed changes, acks, directives). end() finishes the
 * iteration after the queued items; fail() ends it with an error once the queued items are read.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  // Consumed from `head`; the array is compacted now and then, so taking an item stays O(1) however far
  // the consumer falls behind (Array.prototype.shift is linear in the queue length).
  private items: T[] = [];
  private head = 0;
  private wake: (() => void) | undefined;
  private ended = false;
  private error: unknown;

  get size(): number {
    return this.items.length - this.head;
  }

  get closed(): boolean {
    return this.ended;
  }

  push(item: T): void {
    if (this.ended) return;
    this.items.push(item);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(error: unknown): void {
    if (this.ended) return;
    this.error = error;
    this.end();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.head < this.items.length) {
        const item = this.items[this.head]!;
        this.head += 1;
        if (this.head >= 1024 && this.head * 2 >= this.items.length) {
          this.items = this.items.slice(this.head);
          this.head = 0;
        }
        yield item;
        continue;
      }
      if (this.ended) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}
