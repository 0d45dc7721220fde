import { ConfigError } from "@fabric/platform";
import type { AgentConfig } from "./config.js";
import { readNodeRecord, type AgentPaths } from "./state-dir.js";

export interface ControlPlaneUrls {
  routerUrl: string;
  registryUrl: string;
  enrollmentUrl: string;
}

/**
 * The control plane's URLs: settings (flags, environment, agent.yaml) over what enrollment stored in
 * node.json. Throws a ConfigError naming every one that is missing.
 */
export function resolveEndpoints(config: AgentConfig, paths: AgentPaths): ControlPlaneUrls {
  const stored = readNodeRecord(paths)?.endpoints;
  const routerUrl = config.routerUrl ?? stored?.routerUrl;
  const registryUrl = config.registryUrl ?? stored?.registryUrl;
  const enrollmentUrl = config.enrollmentUrl ?? stored?.enrollmentUrl;
  const missing = [
    ...(routerUrl ? [] : ["router URL: set routerUrl in agent.yaml, FABRIC_ROUTER_URL or --router-url"]),
    ...(registryUrl
      ? []
      : ["registry URL: set registryUrl in agent.yaml, FABRIC_REGISTRY_URL or --registry-url"]),
    ...(enrollmentUrl
      ? []
      : ["enrollment URL: set enrollmentUrl in agent.yaml, FABRIC_ENROLLMENT_URL or --server"]),
  ];
  if (missing.length > 0) throw new ConfigError(missing);
  return { routerUrl: routerUrl!, registryUrl: registryUrl!, enrollmentUrl: enrollmentUrl! };
}
