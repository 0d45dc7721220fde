const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export function formatElapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}h ${pad(m)}m ${pad(s % 60)}s` : `${m}m ${pad(s % 60)}s`;
}

/**
 * A "still waiting" indicator: on a terminal, one line redrawn with a spinner and the elapsed time; in a
 * log or pipe, a plain line at start and then every `intervalMs`, so unattended installs show progress
 * without flooding their logs.
 */
export class ProgressLine {
  private timer: NodeJS.Timeout | undefined;
  private readonly started = Date.now();
  private frame = 0;

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly text: (elapsed: string) => string,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    if (this.out.isTTY) {
      this.timer = setInterval(() => this.draw(), 100);
      this.draw();
    } else {
      this.line();
      this.timer = setInterval(() => this.line(), this.intervalMs);
    }
    this.timer.unref();
  }

  /** Ends the indicator, leaving `final` (if any) on its own line. */
  stop(final?: string): void {
    clearInterval(this.timer);
    if (this.out.isTTY) this.out.write("\r\x1b[K");
    if (final) this.out.write(`${final}\n`);
  }

  private elapsed(): string {
    return formatElapsed(Date.now() - this.started);
  }

  private draw(): void {
    this.frame = (this.frame + 1) % FRAMES.length;
    this.out.write(`\r\x1b[K${FRAMES[this.frame]} ${this.text(this.elapsed())}`);
  }

  private line(): void {
    this.out.write(`${this.text(this.elapsed())}\n`);
  }
}
