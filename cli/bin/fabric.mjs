#!/usr/bin/env node
// The `fabric` executable: the CLI is TypeScript run from source, so register tsx's ESM loader (resolved
// from this file, not the caller's cwd) before importing the entry point.
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
