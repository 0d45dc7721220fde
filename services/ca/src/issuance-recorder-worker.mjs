// Worker threads do not inherit the TypeScript loader the CA runs under (node --import tsx), so the
// issuance recorder boots through this JavaScript file, which registers tsx and then loads it.
import { register } from "tsx/esm/api";

register();
await import("./issuance-recorder-worker.ts");
