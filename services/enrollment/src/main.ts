// The enrollment process: `node --import tsx services/enrollment/src/main.ts` (settings in service.ts).
import { runServiceMain } from "@fabric/platform";
import { enrollmentDefinition } from "./service.js";

await runServiceMain(enrollmentDefinition);
