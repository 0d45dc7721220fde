/** Where a command reads and writes: the process's streams in `main.ts`, captured ones in tests. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  stdin: NodeJS.ReadableStream;
  stdoutIsTty: boolean;
  env: NodeJS.ProcessEnv;
}
