import { join, resolve } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import {
  buildSpiffeId,
  createRpcClient,
  identityExists,
  inspectCertificate,
  loadIdentity,
  type CertificateFacts,
  type TlsCredentials,
} from "@fabric/platform";
import { CliError, usageError } from "./cli-error.js";
import { ConfigFile, unknownContext, type ContextConfig } from "./config-file.js";
import { EXIT } from "./exit-codes.js";
import type { GlobalOptions } from "./global-flags.js";
import type { CliSettings } from "./settings.js";

/** Unary calls get this deadline unless --timeout says otherwise. */
const DEFAULT_UNARY_TIMEOUT_MS = 30_000;

export interface LoadedIdentity {
  dir: string;
  credentials: TlsCredentials;
  facts: CertificateFacts;
}

/** The last service a command called, so failures can name it. */
export interface CallTarget {
  group: string;
  url: string;
}

/**
 * What a command runs against: the context (from --context or current-context), the identity (from
 * --identity or the context), and the service URLs (from --server or the context). Everything is read
 * lazily, so commands that need none of it (help, completion) work without a config file.
 */
export class Session {
  private configFile: ConfigFile | undefined;
  private loaded: LoadedIdentity | undefined;
  lastTarget: CallTarget | undefined;

  constructor(
    readonly options: GlobalOptions,
    readonly settings: CliSettings,
    /** The service group --server applies to for the running command. */
    private readonly serverGroup: string | undefined,
  ) {}

  get home(): string {
    return this.settings.home;
  }

  config(): ConfigFile {
    this.configFile ??= ConfigFile.read(this.home);
    return this.configFile;
  }

  contextName(): string | undefined {
    return this.options.context ?? this.config().currentContext;
  }

  context(): ContextConfig | undefined {
    const name = this.contextName();
    if (name === undefined) return undefined;
    const context = this.config().context(name);
    if (!context) throw unknownContext(name, this.config().contextNames);
    return context;
  }

  /** Where the identity lives: --identity, else $FABRIC_HOME/certs/<the context's identity>/. */
  identityDir(): string | undefined {
    if (this.options.identity !== undefined) return resolve(this.options.identity);
    const id = this.context()?.identity;
    return id === undefined ? undefined : join(this.home, "certs", id);
  }

  identity(): LoadedIdentity {
    if (this.loaded) return this.loaded;
    const dir = this.identityDir();
    if (dir === undefined) {
      throw new CliError(
        EXIT.refused,
        "no identity to call with: neither --identity nor the context names one",
        "pass --identity <dir>, or pick a context that has one (`fabric context ls`); developers get theirs " +
          "with `fabric dev init --dev-id <id> --server <enrollment url> --pin <PIN from your admin>`",
      );
    }
    if (!identityExists(dir)) {
      throw new CliError(
        EXIT.refused,
        `no identity in ${dir} (key.pem and cert.pem are needed)`,
        "check --identity or the context's identity (`fabric context ls`)",
      );
    }
    let credentials: TlsCredentials;
    try {
      credentials = loadIdentity(dir);
    } catch (err) {
      throw new CliError(EXIT.refused, (err as Error).message, "re-onboard to write a complete identity");
    }
    this.loaded = { dir, credentials, facts: inspectCertificate(credentials.certificatePem) };
    return this.loaded;
  }

  /** Forgets the loaded identity so the next use reads the directory again (after renewal). */
  reloadIdentity(): LoadedIdentity {
    this.loaded = undefined;
    return this.identity();
  }

  trustDomain(): string {
    const td = this.context()?.["trust-domain"] ?? this.identity().facts.identity?.trustDomain;
    if (!td) {
      throw usageError(
        "the trust domain is unknown: the context has none and the identity carries no Fabric SPIFFE ID",
        "set it with `fabric context set <name> --trust-domain <td>`",
      );
    }
    return td;
  }

  /** The URL of a service: --server when it applies to this command's service, else the context's. */
  serviceUrl(group: string): string | undefined {
    if (this.options.server !== undefined && this.serverGroup === group) return this.options.server;
    return this.context()?.servers[group];
  }

  requireServiceUrl(group: string): string {
    const url = this.serviceUrl(group);
    if (url === undefined) {
      throw usageError(
        `no URL for the ${group} service`,
        `pass --server https://host:port, or record it in the context: fabric context set <name> --${group}-url <url>`,
      );
    }
    return url;
  }

  /**
   * A client of a Fabric service over mTLS with the caller's identity; the server must present
   * spiffe://<trust domain>/service/<group>.
   */
  client<S extends DescService>(service: S, group: string): Client<S> {
    const url = this.requireServiceUrl(group);
    const { credentials } = this.identity();
    this.lastTarget = { group, url };
    return createRpcClient(service, {
      url,
      credentials,
      expectServerId: buildSpiffeId({ trustDomain: this.trustDomain(), kind: "service", id: group }),
      timeoutMs: this.options.timeoutMs ?? DEFAULT_UNARY_TIMEOUT_MS,
      retries: 2,
    });
  }

  /** What gets a new identity once the current one has expired or been revoked. */
  reonboardCommand(): string {
    const facts = attempt(() => this.identity().facts)?.identity;
    if (facts && facts.kind !== "user") {
      return facts.kind === "node"
        ? `re-enroll node "${facts.id}" with a new join token from your admin`
        : `ask a platform admin to issue a new ${facts.kind} identity for "${facts.id}"`;
    }
    const enrollment = attempt(() => this.serviceUrl("enrollment")) ?? "<enrollment url>";
    const id = facts?.id ?? "<your developer id>";
    return `fabric dev init --dev-id ${id} --server ${enrollment} --pin <PIN from your admin>`;
  }
}

/** The value, or undefined when computing it fails (for advice printed while already failing). */
function attempt<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}
