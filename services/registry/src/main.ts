// The registry process: `node --import tsx services/registry/src/main.ts` (settings from FABRIC_* / FABRIC_CONFIG).
import { runServiceMain } from "@fabric/platform";
import { registryService } from "./service.js";

await runServiceMain(registryService);
