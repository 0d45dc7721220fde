import type { Io } from "./io.js";

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
/** Without a terminal, how often a "still waiting" line is printed. */
const LINE_INTERVAL_MS = 10_000;

export interface Progress {
  /** Ends the wait: replaces the spinner (or follows the last line) with `text`. */
  done(text: string): void;
}

/**
 * Shows that the CLI is waiting, on stderr (stdout stays for results): a spinner with the elapsed time
 * on a terminal, otherwise the text once and a line every 10 s, so logs of scripted runs stay short.
 */
export function startProgress(io: Io, text: string, stderrIsTty = process.stderr.isTTY === true): Progress {
  const started = Date.now();
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0)}s`;
  let frame = 0;
  let timer: NodeJS.Timeout;
  if (stderrIsTty) {
    const draw = () => io.err(`\r\x1b[2K${FRAMES[frame++ % FRAMES.length]} ${text} (${elapsed()})`);
    draw();
    timer = setInterval(draw, 100);
  } else {
    io.err(`${text}…\n`);
    timer = setInterval(() => io.err(`  still waiting (${elapsed()}): ${text}\n`), LINE_INTERVAL_MS);
  }
  timer.unref();
  return {
    done(doneText) {
      clearInterval(timer);
      io.err(stderrIsTty ? `\r\x1b[2K${doneText}\n` : `${doneText}\n`);
    },
  };
}
