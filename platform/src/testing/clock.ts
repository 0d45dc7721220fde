import type { Clock, ClockTimer } from "../clock.js";

interface FakeTimer {
  /** Elapsed time (not wall time) at which it fires. */
  at: number;
  seq: number;
  fn: () => void;
}

/**
 * A Clock that moves only when told. `advance` lets time pass (wall time and elapsed time together,
 * firing due timers in order); `jump` steps the wall clock alone, as an NTP correction would, leaving
 * timers where they were.
 */
export class FakeClock implements Clock {
  private wall: number;
  private elapsed = 0;
  private seq = 0;
  private readonly timers = new Set<FakeTimer>();

  constructor(start: number | Date = Date.now()) {
    this.wall = typeof start === "number" ? start : start.getTime();
  }

  now(): number {
    return this.wall;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    const timer: FakeTimer = { at: this.elapsed + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.add(timer);
    return timer as unknown as ClockTimer;
  }

  clearTimeout(timer: ClockTimer): void {
    this.timers.delete(timer as unknown as FakeTimer);
  }

  /** Timers waiting to fire. */
  get pending(): number {
    return this.timers.size;
  }

  /** Lets `ms` pass: fires every timer due by then, earliest first, each seeing its own time. */
  advance(ms: number): void {
    const target = this.elapsed + ms;
    for (;;) {
      let next: FakeTimer | undefined;
      for (const t of this.timers) {
        if (t.at <= target && (!next || t.at < next.at || (t.at === next.at && t.seq < next.seq))) next = t;
      }
      if (!next) break;
      this.timers.delete(next);
      this.wall += next.at - this.elapsed;
      this.elapsed = next.at;
      next.fn();
    }
    this.wall += target - this.elapsed;
    this.elapsed = target;
  }

  /** Advances to the wall time `at` (must not be in the past). */
  advanceTo(at: number | Date): void {
    const target = typeof at === "number" ? at : at.getTime();
    if (target < this.wall) throw new Error("FakeClock.advanceTo: that time has passed");
    this.advance(target - this.wall);
  }

  /** Steps the wall clock by `ms` (either way) without letting any elapsed time pass. */
  jump(ms: number): void {
    this.wall += ms;
  }
}
