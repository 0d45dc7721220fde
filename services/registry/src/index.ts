// What other packages use from the registry: its service definition (to run it in-process) and settings.
export { registryService, registrySettings } from "./service.js";
