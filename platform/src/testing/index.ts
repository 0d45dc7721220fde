export * from "./database.js";
export * from "./pki.js";
export * from "./processes.js";
