// What other packages use: the CLI (`fabric ca init|status`, `fabric up`), the test harness, benches.
export { caDefinition } from "./service.js";
export { initCa, type InitCaOptions, type InitCaResult, type CaCertificateSummary } from "./init.js";
export { caStatus, type CaStatus, type CaStatusOptions } from "./status.js";
export {
  OfflineIssuer,
  issueIdentity,
  type OfflineClaims,
  type OfflineIssueOptions,
} from "./offline-issuance.js";
export { CA_FILES, caExists, serviceIdentityDir } from "./ca-directory.js";
export { MIN_PASSPHRASE_LENGTH } from "./key-custody.js";
export { DEFAULT_LIFETIMES } from "./lifetimes.js";
