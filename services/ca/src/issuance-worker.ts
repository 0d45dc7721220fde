// A crypto worker of the CA: verifies CSRs and signs leaves off the main thread, so the event loop
// stays free for RPCs and database commits (see issuance-workers.ts).
import { parentPort, workerData } from "node:worker_threads";
import { FabricError } from "@fabric/platform";
import { verifyCsrPem } from "./csr-verifier.js";
import { LeafIssuer, type LeafIssuerOptions } from "./leaf-issuer.js";
import type { IssueJob, IssueReply } from "./issuance-workers.js";

const issuer = await LeafIssuer.create(workerData as LeafIssuerOptions);

parentPort!.on("message", (jobs: IssueJob[]) => {
  const replies = jobs.map((job): IssueReply => {
    try {
      const { spki } = verifyCsrPem(job.csrPem);
      const leaf = issuer.issue({
        claims: job.claims,
        spki,
        notBefore: new Date(job.notBefore),
        notAfter: new Date(job.notAfter),
        dnsNames: job.dnsNames,
        ipAddresses: job.ipAddresses,
      });
      return {
        id: job.id,
        leaf: {
          pem: leaf.pem,
          serialHex: leaf.serialHex,
          fingerprintSha256: leaf.fingerprintSha256,
          publicKeySha256: leaf.publicKeySha256,
          spiffeId: leaf.spiffeId,
          notBefore: leaf.notBefore.getTime(),
          notAfter: leaf.notAfter.getTime(),
        },
      };
    } catch (err) {
      return err instanceof FabricError
        ? { id: job.id, error: { kind: err.kind, message: err.message } }
        : { id: job.id, error: { kind: "internal", message: (err as Error).message } };
    }
  });
  parentPort!.postMessage(replies);
});
parentPort!.postMessage("ready");
