// A node's Session from the test side: push reports, watch acks and directives, see how it ended.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ConnectError, type Client } from "@connectrpc/connect";
import type {
  RegistryService,
  SessionRequestSchema,
  SessionResponse,
} from "@fabric/proto/fabric/registry/v1/registry_pb.js";
import { AsyncQueue } from "../../src/queue.js";
import { eventually } from "./calls.js";

type Payload = MessageInitShape<typeof SessionRequestSchema>["payload"];

export interface TestSession {
  responses: SessionResponse[];
  /** Sends a report with the next sequence number; returns that number. */
  send(payload: Payload): bigint;
  /** Sends a raw request (for malformed sequence numbers). */
  sendRaw(request: MessageInitShape<typeof SessionRequestSchema>): void;
  /** Highest acknowledged sequence number so far. */
  acked(): bigint;
  waitAcked(seq: bigint, timeoutMs?: number): Promise<void>;
  /** Half-closes and waits for the stream to end. */
  close(): Promise<ConnectError | undefined>;
  /** Resolves when the stream ends: undefined if cleanly, else the error. */
  ended: Promise<ConnectError | undefined>;
}

export function openSession(client: Client<typeof RegistryService>): TestSession {
  const requests = new AsyncQueue<MessageInitShape<typeof SessionRequestSchema>>();
  const responses: SessionResponse[] = [];
  let seq = 0n;
  let highest = 0n;
  const ended = (async () => {
    try {
      for await (const res of client.session(requests, { timeoutMs: 0 })) {
        responses.push(res);
        if (res.payload.case === "ack" && res.payload.value.ackedSeq > highest)
          highest = res.payload.value.ackedSeq;
      }
      return undefined;
    } catch (err) {
      return ConnectError.from(err);
    } finally {
      requests.end();
    }
  })();
  const acked = () => highest;
  return {
    responses,
    send(payload) {
      seq += 1n;
      requests.push({ seq, payload });
      return seq;
    },
    sendRaw(request) {
      requests.push(request);
    },
    acked,
    async waitAcked(target, timeoutMs = 10_000) {
      await eventually(() => (acked() >= target ? true : undefined), timeoutMs);
    },
    async close() {
      requests.end();
      return ended;
    },
    ended,
  };
}

export const heartbeat = (init: Record<string, unknown> = {}): Payload =>
  ({
    case: "heartbeat",
    value: { health: 1, cpuRatio: 0.2, memoryRatio: 0.3, agentVersion: "1.0.0", ...init },
  }) as Payload;
