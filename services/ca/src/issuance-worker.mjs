// Worker threads do not inherit the TypeScript loader the CA runs under (node --import tsx), so each
// issuance worker boots through this JavaScript file, which registers tsx and then loads the worker.
import { register } from "tsx/esm/api";

register();
await import("./issuance-worker.ts");
