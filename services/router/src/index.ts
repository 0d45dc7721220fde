export { routerDefinition, routerSettings } from "./service.js";
export { SIGNATURE_ALGORITHM } from "./snapshot-signer.js";
