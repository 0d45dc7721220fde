// Hostile bytes against what Fabric parses from the outside: protobuf request messages of every unary RPC
// of every service (sent raw over mTLS as a caller each method admits), and the CSR and join-token parsers
// in watched workers. Nothing may crash, hang or answer with a fault: only refusals (InvalidArgument and
// the other caller-caused codes) or success. 10 s per fuzzer here; `npm run bench:fuzz` runs them longer.
// A failure prints FABRIC_FUZZ_SEED to replay it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_ENROLLMENT_RATE_LIMITS, startFabric, type Fabric } from "../harness/fabric.js";
import { fuzzGrpc } from "./support/grpc-fuzz.js";
import { runParserFuzz } from "./support/parser-fuzz-run.js";
import type { ParserTarget } from "./support/parser-fuzz.js";
import { fuzzSeed } from "./support/prng.js";

const SECONDS = 10;
const seed = fuzzSeed();

describe(`protobuf request decoding (FABRIC_FUZZ_SEED=${seed})`, () => {
  let fabric: Fabric;

  beforeAll(async () => {
    fabric = await startFabric({
      services: ["ca", "registry", "enrollment", "router"],
      env: {
        enrollment: {
          // The fuzzer calls from one address far faster than any rate limit allows.
          ...NO_ENROLLMENT_RATE_LIMITS,
        },
      },
    });
  }, 180_000);

  afterAll(async () => {
    await fabric?.close();
  });

  it("every unary RPC answers random and mutated messages with a status that is not a fault", async () => {
    const result = await fuzzGrpc(fabric, { seconds: SECONDS, seed, inFlight: 8 });
    process.stdout.write(
      `grpc fuzz: ${result.calls} calls over ${result.methods} RPCs in ${result.seconds.toFixed(1)} s: ${JSON.stringify(result.answers)}\n`,
    );
    expect(result.findings).toEqual([]);
    expect(result.answers["InvalidArgument"] ?? 0).toBeGreaterThan(0);
    // Every service survived it.
    for (const service of ["ca", "registry", "enrollment", "router"] as const) {
      const status = await fetch(`${fabric.urls[service]!.http}/healthz`).then(
        (r) => r.status,
        () => "down",
      );
      expect([service, status]).toEqual([service, 200]);
    }
  }, 120_000);
});

describe(`parsers of untrusted text (FABRIC_FUZZ_SEED=${seed})`, () => {
  it.each<ParserTarget>(["ca-csr", "platform-csr", "join-token"])(
    "%s refuses every malformed input precisely, without crashing or hanging",
    async (target) => {
      const outcome = await runParserFuzz(target, SECONDS, seed);
      process.stdout.write(`${target}: ${JSON.stringify(outcome).slice(0, 300)}\n`);
      expect(outcome).toMatchObject({ code: 0 });
      expect(outcome.inputs).toBeGreaterThan(1_000);
    },
    60_000,
  );
});
