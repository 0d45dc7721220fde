// The fuzzers of test/suites/fuzzing.test.ts run longer (60 s each; the CI test runs 10 s): protobuf
// request bytes against every unary RPC of the four running services, and the CSR and join-token parsers
// in watched workers. Prints what broke (if anything) and the rates. Baselines measured in the same run:
// well-formed calls through the same raw gRPC client, and each parser on its unmutated seeds.
//
//   npm run bench:fuzz -w @fabric/bench     BENCH_QUICK=1: 3 s each
//   knobs: BENCH_FUZZ_SECONDS, FABRIC_FUZZ_SEED (replay)
import { GetTrustBundleRequestSchema } from "@fabric/proto/fabric/ca/v1/ca_pb.js";
import { create, toBinary } from "@bufbuild/protobuf";
import type { Fabric } from "../../test/harness/fabric.js";
import { fuzzGrpc } from "../../test/suites/support/grpc-fuzz.js";
import type { ParserTarget } from "../../test/suites/support/parser-fuzz.js";
import { runParserFuzz } from "../../test/suites/support/parser-fuzz-run.js";
import { fuzzSeed } from "../../test/suites/support/prng.js";
import { RawGrpcClient } from "../../test/suites/support/raw-grpc.js";
import { closedLoop } from "../lib/closed-loop.js";
import { runStandalone } from "../lib/fabric.js";
import { count, line, quick } from "../lib/stats.js";

const SECONDS = Number(process.env.BENCH_FUZZ_SECONDS ?? (quick ? 3 : 60));
const IN_FLIGHT = 8;

/** Well-formed GetTrustBundle calls per second through the raw client, as a platform-admin. */
async function wellFormedRate(fabric: Fabric): Promise<number> {
  const client = new RawGrpcClient(fabric.urls.ca!.grpc, fabric.admin);
  const body = toBinary(GetTrustBundleRequestSchema, create(GetTrustBundleRequestSchema, {}));
  const run = await closedLoop({
    workers: IN_FLIGHT,
    warmupSeconds: 0.5,
    seconds: quick ? 1 : 3,
    call: () => client.call("/fabric.ca.v1.CaService/GetTrustBundle", body, 10_000),
  });
  client.close();
  return run.done / run.seconds;
}

export async function fuzz(fabric: Fabric): Promise<void> {
  const seed = fuzzSeed();
  console.log(
    `fuzz${quick ? " (quick)" : ""}: ${SECONDS} s per fuzzer, seed ${seed} (FABRIC_FUZZ_SEED=${seed} replays it)`,
  );
  const baseline = await wellFormedRate(fabric);
  const grpc = await fuzzGrpc(fabric, { seconds: SECONDS, seed, inFlight: IN_FLIGHT });
  const rate = grpc.calls / grpc.seconds;
  console.log(
    `protobuf requests: ${count(grpc.calls)} to ${grpc.methods} unary RPCs in ${grpc.seconds.toFixed(1)} s, answers ${JSON.stringify(grpc.answers)}`,
  );
  for (const f of grpc.findings) {
    console.log(
      `  BROKEN ${f.answer} — at ${f.rpcs.slice(0, 5).join(", ")}${f.rpcs.length > 5 ? ` and ${f.rpcs.length - 5} more` : ""}; e.g. ${f.example.rpc} with base64 ${f.example.payload.slice(0, 120)}`,
    );
  }
  console.log(
    line(
      "protobuf fuzz",
      `${count(rate)} requests/s, ${grpc.findings.length} kinds of breakage`,
      "0 breakages",
      "well-formed calls through the same client",
      rate / baseline,
    ),
  );

  for (const target of ["ca-csr", "platform-csr", "join-token"] as ParserTarget[]) {
    const result = await runParserFuzz(target, SECONDS, seed);
    if (result.code !== 0) {
      console.log(
        `  BROKEN ${target}: ${result.unexpected ?? `hung for ${result.hang} ms`}; input (base64) ${result.input?.slice(0, 200)}`,
      );
      continue;
    }
    const perSecond = result.inputs! / result.seconds!;
    console.log(
      line(
        `${target} fuzz`,
        `${count(result.inputs!)} inputs, ${count(perSecond)}/s, 0 breakages`,
        "0 breakages",
        "the same parser on its unmutated seeds",
        perSecond / result.seedsPerSecond!,
      ),
    );
  }
}

await runStandalone(import.meta.url, fuzz);
