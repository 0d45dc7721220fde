import type { Command } from "../command.js";
import { daysLeft } from "../identity-check.js";
import { formatKeyValues } from "../output.js";
import type { CommandModule } from "./module.js";

/** `fabric whoami`: the identity commands run as, read from its certificate. */
export const whoamiCommands: CommandModule = () => {
  const whoami: Command = {
    path: ["whoami"],
    summary: "Shows the identity commands run as: id, kind, SPIFFE ID, scope and expiry.",
    help:
      "Shows the identity of the current context (or --identity): principal id and kind, SPIFFE ID, " +
      "cluster, organization and grant, serial, validity and days left. Like every command it renews an " +
      "identity close to expiry; unlike the others it still reports an expired one, with the command " +
      "that replaces it.",
    flags: [],
    identity: "report",
    async run({ session, output }) {
      const { dir, facts } = session.identity();
      const now = Date.now();
      const doc = {
        context: session.contextName() ?? null,
        identityDir: dir,
        id: facts.identity?.id ?? facts.subjectCommonName ?? "",
        kind: facts.identity?.kind ?? "",
        spiffeId: facts.spiffeId ?? "",
        trustDomain: facts.identity?.trustDomain ?? "",
        cluster: facts.clusterExtension ?? facts.identity?.cluster ?? "",
        organization: facts.organization ?? "",
        grant: facts.grant ?? "",
        serial: facts.serialHex,
        notBefore: facts.notBefore.toISOString(),
        notAfter: facts.notAfter.toISOString(),
        daysLeft: Number(((facts.notAfter.getTime() - now) / 86_400_000).toFixed(1)),
        expired: facts.notAfter.getTime() <= now,
      };
      output.print(doc, () =>
        formatKeyValues(
          Object.entries({
            ...doc,
            daysLeft: doc.expired ? "expired" : daysLeft(facts, now),
            context: doc.context ?? "(none)",
          })
            .filter(([key, value]) => value !== "" && key !== "expired")
            .map(([key, value]) => [key, String(value)]),
        ),
      );
    },
  };
  return { commands: [whoami] };
};
