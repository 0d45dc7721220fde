/**
 * Environment variables a workload spec may not set: those that change how a process loads code or what
 * it trusts. A spec is reviewed as "this command with this configuration"; these variables would run
 * other code than the command names (or, in pro, than the digest-pinned image was built with) and
 * silently weaken TLS, without the command changing. The registry refuses them when a spec is written
 * (services/registry/src/workload-rules.ts keeps the same list; a test holds the two equal) and the agent
 * again before it starts anything, in case a snapshot was built by an older registry.
 *
 * Names are compared case-insensitively: some programs read the lower-case spelling (curl only reads
 * `http_proxy`), and no workload needs a differently-cased twin of one of these.
 */

/** Exact names, upper-cased. */
export const REFUSED_NAMES = new Set([
  // The dynamic loader and libc: glibc's own "unsecure" list (sysdeps/generic/unsecvars.h), which ld.so
  // drops for setuid programs because each one loads code or data from a path it names. (LD_* below.)
  "GCONV_PATH",
  "GETCONF_DIR",
  "GLIBC_TUNABLES",
  "HOSTALIASES",
  "LOCALDOMAIN",
  "LOCPATH",
  "MALLOC_TRACE",
  "NIS_PATH",
  "NLSPATH",
  "RESOLV_HOST_CONF",
  "RES_OPTIONS",
  // Which executable a bare command name is, and where per-user start-up files are read from (the agent
  // sets HOME to the workload's own directory).
  "PATH",
  "HOME",
  // Interpreters and runtimes: modules, options or start-up code loaded before the program itself.
  "NODE_OPTIONS",
  "NODE_PATH",
  "NODE_REPL_EXTERNAL_MODULE",
  "NODE_ICU_DATA",
  "PYTHONPATH",
  "PYTHONSTARTUP",
  "PYTHONHOME",
  "PYTHONUSERBASE",
  "PYTHONPLATLIBDIR",
  "PYTHONBREAKPOINT",
  "PYTHONWARNINGS", // a warning category names a module, which is imported
  "PERL5OPT",
  "PERL5LIB",
  "PERLLIB",
  "PERL5DB",
  "RUBYOPT",
  "RUBYLIB",
  "JAVA_TOOL_OPTIONS",
  "_JAVA_OPTIONS",
  "JDK_JAVA_OPTIONS",
  "CLASSPATH",
  // Shells: files sourced at start, commands run at each prompt or trace line, word splitting.
  "BASH_ENV",
  "ENV",
  "ZDOTDIR",
  "PROMPT_COMMAND",
  "PS4",
  "SHELLOPTS",
  "BASHOPTS",
  "IFS",
  "CDPATH",
  // Programs git and ssh run on the process's behalf.
  "GIT_SSH",
  "GIT_SSH_COMMAND",
  "GIT_EXEC_PATH",
  "GIT_ASKPASS",
  "GIT_PROXY_COMMAND",
  "SSH_ASKPASS",
  // Trust: CA bundles, switched-off verification, TLS key logs, OpenSSL engines and providers.
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "NODE_EXTRA_CA_CERTS",
  "NODE_TLS_REJECT_UNAUTHORIZED",
  "REQUESTS_CA_BUNDLE",
  "CURL_CA_BUNDLE",
  "PYTHONHTTPSVERIFY",
  "GIT_SSL_NO_VERIFY",
  "GIT_SSL_CAINFO",
  "SSLKEYLOGFILE",
  "OPENSSL_CONF",
  "OPENSSL_ENGINES",
  "OPENSSL_MODULES",
]);

/** Prefixes, upper-cased: the loader's own (Linux, macOS), bash's exported functions, git's config. */
export const REFUSED_PREFIXES = ["LD_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG"];

/**
 * Proxies send every outbound request through a host of the spec's choosing (and `HTTP_PROXY` is the
 * httpoxy confusion). NO_PROXY only turns proxying off, so it stays allowed.
 */
const PROXY = /_PROXY$/;

/** A name a process environment can hold unambiguously (no `=`, which would define another name). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Why a workload may not set this variable, or undefined when it may. */
export function loaderVariable(name: string): string | undefined {
  const upper = name.toUpperCase();
  if (
    REFUSED_NAMES.has(upper) ||
    REFUSED_PREFIXES.some((p) => upper.startsWith(p)) ||
    (PROXY.test(upper) && upper !== "NO_PROXY")
  ) {
    return `${name} changes how the process loads code or what it trusts`;
  }
  return undefined;
}

/** The first reason a spec's environment cannot be given to a process, or undefined. */
export function workloadEnvRefusal(env: Record<string, string>): string | undefined {
  for (const name of Object.keys(env)) {
    if (!ENV_NAME.test(name)) return `spec.env: ${JSON.stringify(name)} is not a valid variable name`;
    const reason = loaderVariable(name);
    if (reason) return `spec.env: ${reason}; refused`;
  }
  return undefined;
}
