export * from "./database.js";
export * from "./pki.js";
export * from "./processes.js";
export * from "./clock.js";
export * from "./audit-tampering.js";
export * from "./raw-h2.js";
