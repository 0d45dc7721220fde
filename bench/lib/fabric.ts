// The control plane every bench of mine measures: the four services as real processes (test/harness) on
// a fresh database, with the abuse limits opened up (benches measure throughput, not rate limiting) and
// logs quiet. `npm run bench` starts it once for all of them; a bench run alone starts its own.
import { pathToFileURL } from "node:url";
import { NO_ENROLLMENT_RATE_LIMITS, startFabric, type Fabric } from "../../test/harness/fabric.js";

export async function benchFabric(): Promise<Fabric> {
  const quiet = { FABRIC_LOG_LEVEL: "error" };
  return startFabric({
    services: ["ca", "registry", "enrollment", "router"],
    env: {
      ca: quiet,
      registry: quiet,
      router: quiet,
      enrollment: {
        ...quiet,
        ...NO_ENROLLMENT_RATE_LIMITS,
      },
    },
  });
}

/** Runs `bench` on a fabric of its own when its file is the process entry point. */
export async function runStandalone(
  moduleUrl: string,
  bench: (fabric: Fabric) => Promise<void>,
): Promise<void> {
  if (process.argv[1] === undefined || pathToFileURL(process.argv[1]).href !== moduleUrl) return;
  const fabric = await benchFabric();
  try {
    await bench(fabric);
  } finally {
    await fabric.close();
  }
}
