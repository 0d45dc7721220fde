// @peculiar/x509 needs reflect-metadata loaded and a WebCrypto provider set before first use; every
// module in platform imports x509 through here so that happens exactly once.
import "reflect-metadata";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { x509 };
