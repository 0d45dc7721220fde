// Worker threads do not inherit the TypeScript loader (node --import tsx): register it, then load the
// simulated agents.
import { register } from "tsx/esm/api";

register();
await import("./agent-worker.ts");
