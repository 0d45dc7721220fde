import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";

export interface RotationOptions {
  /** A file is rotated before a write would take it past this size. */
  maxBytes: number;
  /** Files kept in all: `name.log` plus `name.log.1` (newest) up to `name.log.<maxFiles-1>` (oldest). */
  maxFiles: number;
}

/**
 * An append-only log file rotated by size. Writes are synchronous so that lines from a workload that is
 * crashing are on disk before the supervisor reacts to its exit.
 */
export class RotatingLog {
  private fd: number | undefined;
  private size = 0;

  constructor(
    readonly path: string,
    private readonly options: RotationOptions,
  ) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  }

  write(chunk: string | Uint8Array): void {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
    if (bytes.length === 0) return;
    const fd = this.open();
    if (this.size > 0 && this.size + bytes.length > this.options.maxBytes) {
      this.rotate();
      return this.write(bytes);
    }
    for (let offset = 0; offset < bytes.length;) offset += writeSync(fd, bytes, offset);
    this.size += bytes.length;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private open(): number {
    if (this.fd === undefined) {
      this.fd = openSync(this.path, "a", 0o600);
      this.size = fstatSync(this.fd).size;
    }
    return this.fd;
  }

  private rotate(): void {
    this.close();
    const keep = this.options.maxFiles - 1;
    if (keep <= 0) {
      rmSync(this.path, { force: true });
    } else {
      rmSync(`${this.path}.${keep}`, { force: true });
      for (let i = keep - 1; i >= 1; i--) {
        if (existsSync(`${this.path}.${i}`)) renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
      }
      renameSync(this.path, `${this.path}.1`);
    }
    this.open();
  }
}
