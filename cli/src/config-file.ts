import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isValidTrustDomain, writeFileAtomic } from "@fabric/platform";
import { parseDocument, type Document } from "yaml";
import { z } from "zod";
import { usageError } from "./cli-error.js";

/**
 * $FABRIC_HOME/config.yaml: named contexts, each saying where the services are, which trust domain they
 * belong to and which identity (a directory under $FABRIC_HOME/certs/) to use.
 *
 *   current-context: local
 *   contexts:
 *     local:
 *       trust-domain: fabric.local
 *       identity: admin                  # $FABRIC_HOME/certs/admin/
 *       servers:
 *         ca: https://127.0.0.1:7400
 *         enrollment: https://127.0.0.1:7401
 *         registry: https://127.0.0.1:7402
 *         router: https://127.0.0.1:7403
 */
const CONFIG_FILE_NAME = "config.yaml";

const httpsUrl = z
  .string()
  .url()
  .refine((u) => u.startsWith("https://"), "must be an https:// URL (the gRPC port speaks mTLS)");

const contextSchema = z
  .object({
    "trust-domain": z.string().refine(isValidTrustDomain, "must be a lowercase DNS-like name").optional(),
    identity: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, "must be an identity id (a directory name under certs/)")
      .optional(),
    servers: z.record(z.string(), httpsUrl).default({}),
  })
  .strict();

const fileSchema = z
  .object({
    "current-context": z.string().optional(),
    contexts: z.record(z.string(), contextSchema).default({}),
  })
  .strict();

export type ContextConfig = z.infer<typeof contextSchema>;
type ConfigFileContent = z.infer<typeof fileSchema>;

/** The config file, validated, with the parsed document kept so edits preserve comments and order. */
export class ConfigFile {
  private constructor(
    readonly path: string,
    readonly content: ConfigFileContent,
    private readonly document: Document,
  ) {}

  static read(home: string): ConfigFile {
    const path = join(home, CONFIG_FILE_NAME);
    const text = existsSync(path) ? readFileSync(path, "utf8") : "";
    const document = parseDocument(text);
    if (document.errors.length > 0) {
      throw usageError(`${path} is not valid YAML: ${document.errors[0]!.message}`);
    }
    const parsed = fileSchema.safeParse(document.toJS() ?? {});
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "(top level)"}: ${i.message}`);
      throw usageError(`${path} is invalid:\n  - ${problems.join("\n  - ")}`);
    }
    return new ConfigFile(path, parsed.data, document);
  }

  get currentContext(): string | undefined {
    return this.content["current-context"];
  }

  get contextNames(): string[] {
    return Object.keys(this.content.contexts);
  }

  context(name: string): ContextConfig | undefined {
    return this.content.contexts[name];
  }

  /** Makes `name` the current context and saves the file. */
  use(name: string): void {
    if (!this.context(name)) throw unknownContext(name, this.contextNames);
    this.document.set("current-context", name);
    this.content["current-context"] = name;
    this.save();
  }

  /**
   * Creates or updates a context (only the keys given change) and saves the file. Workflows that obtain
   * an identity (`fabric dev init`, `fabric up`) record their context through here.
   */
  setContext(name: string, patch: ContextConfig): void {
    const given = Object.entries(patch).filter(([, value]) => value !== undefined);
    const merged = contextSchema.safeParse({
      ...this.context(name),
      ...Object.fromEntries(given),
      servers: { ...this.context(name)?.servers, ...patch.servers },
    });
    if (!merged.success) {
      throw usageError(`context "${name}": ${merged.error.issues.map((i) => i.message).join("; ")}`);
    }
    this.content.contexts[name] = merged.data;
    if (!this.document.hasIn(["contexts", name])) {
      this.document.setIn(["contexts", name], this.document.createNode({}));
    }
    for (const [key, value] of given) {
      if (key === "servers") {
        for (const [group, url] of Object.entries(value as Record<string, string>)) {
          this.document.setIn(["contexts", name, "servers", group], url);
        }
      } else {
        this.document.setIn(["contexts", name, key], value);
      }
    }
    this.save();
  }

  private save(): void {
    mkdirSync(join(this.path, ".."), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.path, String(this.document), 0o600);
  }
}

export function unknownContext(name: string, known: string[]) {
  return usageError(
    `no context named "${name}" in the config file`,
    known.length > 0
      ? `known contexts: ${known.join(", ")} (see \`fabric context ls\`)`
      : "no contexts yet: create one with `fabric context set`",
  );
}
