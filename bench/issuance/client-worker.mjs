// Worker threads do not inherit the TypeScript loader (node --import tsx): register it, then load the
// load-generating client.
import { register } from "tsx/esm/api";

register();
await import("./client-worker.ts");
