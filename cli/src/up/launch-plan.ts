import { baseSettings, envNameOf, type ServiceName } from "@fabric/platform";

/** Start order: each service may depend on those before it (everyone on the CA, router on registry). */
export const SERVICE_START_ORDER: readonly ServiceName[] = ["ca", "registry", "enrollment", "router"];

/** Where one service listens. */
export interface ServiceEndpoint {
  grpcPort: number;
  httpPort: number;
  /** https://<advertised host>:<grpc port>, mTLS gRPC. */
  grpc: string;
  /** http://<advertised host>:<http port>: /healthz, /readyz, /metrics (+ /crl, /ocsp on the CA). */
  http: string;
}

export type Endpoints = Record<ServiceName, ServiceEndpoint>;

/** What a ServiceDefinition contributes to its environment: its defaults and its own settings. */
export interface DefinedSettings {
  name: ServiceName;
  defaults: { grpcPort: number; httpPort: number };
  settings: Record<string, unknown>;
}

/** Every setting key a service reads: the platform's base settings plus its own. */
export function settingKeys(def: DefinedSettings): string[] {
  return [...Object.keys(baseSettings(def.defaults)), ...Object.keys(def.settings)];
}

export function endpointsFor(
  host: string,
  ports: Record<ServiceName, { grpcPort: number; httpPort: number }>,
): Endpoints {
  // A wildcard listen address is not an address to dial: advertise loopback for it.
  const advertised = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  const hostPart = advertised.includes(":") ? `[${advertised}]` : advertised;
  return Object.fromEntries(
    Object.entries(ports).map(([name, p]) => [
      name,
      { ...p, grpc: `https://${hostPart}:${p.grpcPort}`, http: `http://${hostPart}:${p.httpPort}` },
    ]),
  ) as Endpoints;
}

export interface LaunchContext {
  endpoints: Endpoints;
  host: string;
  trustDomain: string;
  databaseUrl: string;
  /** The service's identity directory (FABRIC_IDENTITY_DIR). */
  identityDir: string;
  /** CA only: the CA directory and how it gets the passphrase of its keys. */
  ca?: { dir: string; passphrase: { key: string; value: string } };
}

/**
 * The environment one service process is started with, derived from its ServiceDefinition: only the
 * settings it declares are set, each under the name the platform's config loader reads (envNameOf),
 * so a renamed or removed setting cannot silently stop applying. Peers are found through the
 * `<peer>Url` settings a service declares, public endpoints through `public<Peer>Url`.
 */
export function serviceEnvironment(def: DefinedSettings, ctx: LaunchContext): Record<string, string> {
  const keys = new Set(settingKeys(def));
  const env: Record<string, string> = {};
  const set = (key: string, value: string) => {
    if (!keys.has(key)) throw new Error(`the ${def.name} service has no setting "${key}"`);
    env[envNameOf(key)] = value;
  };
  const own = ctx.endpoints[def.name];
  set("trustDomain", ctx.trustDomain);
  set("host", ctx.host);
  set("grpcPort", String(own.grpcPort));
  set("httpPort", String(own.httpPort));
  set("identityDir", ctx.identityDir);
  // The runtime reads DATABASE_URL before FABRIC_DATABASE_URL: set that one, so a stray value in the
  // caller's environment cannot win.
  if (!keys.has("databaseUrl")) throw new Error(`the ${def.name} service has no setting "databaseUrl"`);
  env.DATABASE_URL = ctx.databaseUrl;
  for (const [peer, endpoint] of Object.entries(ctx.endpoints)) {
    if (peer === def.name) continue;
    if (keys.has(`${peer}Url`)) set(`${peer}Url`, endpoint.grpc);
  }
  for (const [peer, endpoint] of Object.entries(ctx.endpoints)) {
    const key = `public${peer[0]!.toUpperCase()}${peer.slice(1)}Url`;
    if (keys.has(key)) set(key, endpoint.grpc);
  }
  if (def.name === "ca") {
    if (!ctx.ca) throw new Error("the CA service needs its directory and passphrase");
    set("caDir", ctx.ca.dir);
    set(ctx.ca.passphrase.key, ctx.ca.passphrase.value);
    set("crlUrl", `${own.http}/crl`);
    set("ocspUrl", `${own.http}/ocsp`);
  }
  return env;
}
