import { runServiceMain } from "@fabric/platform";
import { routerDefinition } from "./service.js";

await runServiceMain(routerDefinition);
