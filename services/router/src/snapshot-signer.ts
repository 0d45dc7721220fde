import { createPrivateKey, sign, type KeyObject } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { normalizePem, type TlsCredentials } from "@fabric/platform";
import { WatchResponseSchema, type WatchResponse } from "@fabric/proto/fabric/router/v1/router_pb.js";
import { encodeSignedSnapshotValue, encodeSignerFields } from "./snapshot-encoding.js";

/** The only algorithm snapshots are signed with; agents refuse any other. */
export const SIGNATURE_ALGORITHM = "ecdsa-p256-sha256";

/** One node's current snapshot, serialized once and shared by every stream of that node. */
export interface PublishedSnapshot {
  nodeId: string;
  clusterId: string;
  version: bigint;
  /** The serialized Snapshot exactly as signed. */
  bytes: Uint8Array;
  /** Length of the content prefix (everything but version and generation time) for change detection. */
  contentLength: number;
  /** Signed on first demand, then reused until the router's identity is renewed. */
  signed?: { by: TlsCredentials; response: WatchResponse };
}

/**
 * Signs snapshots with the router's own service identity (spiffe://<td>/service/router): ECDSA P-256
 * over SHA-256 of the serialized Snapshot, DER signature, the certificate and its intermediates as the
 * signer chain. The key is read from the identity's current credentials, so a renewed identity signs
 * from then on; envelopes signed by the previous identity are re-signed on their next use.
 */
export class SnapshotSigner {
  private key: { creds: TlsCredentials; key: KeyObject; signerFields: Uint8Array } | undefined;
  /** Signatures made, for metrics and for the tests that prove one signature serves many streams. */
  signatures = 0;

  constructor(private readonly credentials: () => TlsCredentials) {}

  envelope(published: PublishedSnapshot): WatchResponse {
    const creds = this.credentials();
    if (published.signed?.by === creds) return published.signed.response;
    if (this.key?.creds !== creds) {
      this.key = {
        creds,
        key: createPrivateKey(creds.privateKeyPem),
        signerFields: encodeSignerFields(
          SIGNATURE_ALGORITHM,
          [creds.certificatePem, ...creds.chainPem].map(normalizePem),
        ),
      };
    }
    const signature = sign("sha256", published.bytes, { key: this.key.key, dsaEncoding: "der" });
    this.signatures++;
    // The SignedSnapshot is encoded here, its signer part (algorithm and PEM chain, most of its bytes)
    // once per identity, and carried as WatchResponse field 1 (signed_snapshot), which the serializer
    // copies verbatim: protobuf-es would encode the PEM text again for every agent. Decoded, it is an
    // ordinary WatchResponse.
    const response = create(WatchResponseSchema);
    response.$unknown = [
      {
        no: 1,
        wireType: WireType.LengthDelimited,
        data: encodeSignedSnapshotValue(published.bytes, signature, this.key.signerFields),
      },
    ];
    published.signed = { by: creds, response };
    return response;
  }
}
