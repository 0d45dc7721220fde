// `npm run docs:settings`: rewrites the configuration reference in README.md from the ServiceDefinitions.
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { renderedSettings, withSettings } from "./readme-settings.js";

const README = fileURLToPath(new URL("../../../README.md", import.meta.url));

writeFileSync(README, withSettings(readFileSync(README, "utf8"), await renderedSettings()));
console.log(`updated the settings reference in ${README}`);
