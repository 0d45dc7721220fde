// The CA process: `node --import tsx services/ca/src/main.ts` (settings from FABRIC_* / FABRIC_CONFIG).
import { runServiceMain } from "@fabric/platform";
import { caDefinition } from "./service.js";

await runServiceMain(caDefinition);
