#!/usr/bin/env node
// fabric-agent runs from its TypeScript sources: tsx is registered in this process (what `node --import
// tsx` does), then the entry point takes over argv, signals and the exit status.
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
