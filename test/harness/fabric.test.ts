import { CaService } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFabric, type Fabric } from "./fabric.js";

let fabric: Fabric;

beforeAll(async () => {
  fabric = await startFabric({ services: ["ca"] });
});

afterAll(async () => {
  await fabric?.close();
});

describe("startFabric", () => {
  it(
    "runs the CA as a process an admin can call, and restarts it on the same address",
    { timeout: 90_000 },
    async () => {
      const ca = fabric.client(CaService, "ca");
      const before = await ca.getTrustBundle({});
      expect(before.trustDomain).toBe("fabric.test");
      expect(before.caBundlePem).toBe(fabric.serviceIdentity("ca").caBundlePem);
      expect(before.crlUrls).toEqual([`${fabric.urls.ca!.http}/crl`]);

      await fabric.stop("ca");
      await expect(ca.getTrustBundle({})).rejects.toThrow();
      await fabric.start("ca");

      const after = await ca.getTrustBundle({});
      expect(after.rootFingerprintsSha256).toEqual(before.rootFingerprintsSha256);
    },
  );

  it("issues fixtures the CA knows about", async () => {
    const node = await fabric.issue({ kind: "node", id: "n-1", cluster: "c1" });
    const ca = fabric.client(CaService, "ca");
    const listed = await ca.listCertificates({ principalId: "n-1" });
    expect(listed.certificates).toHaveLength(1);
    expect(node.certificatePem).toContain("BEGIN CERTIFICATE");
    // the four service identities from initCa and the admin are in the inventory too
    const all = await ca.listCertificates({});
    expect(all.certificates.map((c) => c.principalId)).toEqual(
      expect.arrayContaining(["ca", "registry", "enrollment", "router", "platform-admin", "n-1"]),
    );
  });
});
