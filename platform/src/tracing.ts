import { appendFileSync } from "node:fs";
import {
  SpanKind,
  SpanStatusCode,
  ROOT_CONTEXT,
  context,
  propagation,
  trace,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
} from "@opentelemetry/api";
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter, SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ConnectError, type Interceptor } from "@connectrpc/connect";

/** Writes finished spans as JSON lines: handy locally, and how tests see a trace cross processes. */
export class JsonLinesSpanExporter implements SpanExporter {
  constructor(private readonly path: string) {}

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    try {
      const lines = spans.map((s) =>
        JSON.stringify({
          name: s.name,
          traceId: s.spanContext().traceId,
          spanId: s.spanContext().spanId,
          parentSpanId: s.parentSpanContext?.spanId,
          kind: SpanKind[s.kind],
          service: s.resource.attributes["service.name"],
          status: s.status.code,
          durationMs: s.duration[0] * 1e3 + s.duration[1] / 1e6,
        }),
      );
      appendFileSync(this.path, lines.join("\n") + "\n");
      resultCallback({ code: ExportResultCode.SUCCESS });
    } catch (error) {
      resultCallback({ code: ExportResultCode.FAILED, error: error as Error });
    }
  }

  async shutdown(): Promise<void> {}
}

export interface TracingOptions {
  service: string;
  /** JSON-lines file to append finished spans to. */
  traceFile?: string;
  /** OTLP/HTTP endpoint (e.g. http://collector:4318); the standard OTEL_EXPORTER_OTLP_ENDPOINT works too. */
  otlpEndpoint?: string;
}

/**
 * Starts OpenTelemetry for this process. With no exporter configured spans are still created, so trace
 * ids flow between services and into logs; nothing leaves the process. The SDK is imported here, not at
 * module load, so short-lived processes that never trace (the CLI) don't pay for loading it.
 */
export async function startTracing(options: TracingOptions): Promise<{ shutdown(): Promise<void> }> {
  const [{ NodeSDK }, { BatchSpanProcessor, SimpleSpanProcessor }, { OTLPTraceExporter }] = await Promise.all(
    [
      import("@opentelemetry/sdk-node"),
      import("@opentelemetry/sdk-trace-base"),
      import("@opentelemetry/exporter-trace-otlp-http"),
    ],
  );
  const spanProcessors: SpanProcessor[] = [];
  if (options.traceFile)
    spanProcessors.push(new SimpleSpanProcessor(new JsonLinesSpanExporter(options.traceFile)));
  if (options.otlpEndpoint) {
    spanProcessors.push(
      new BatchSpanProcessor(
        new OTLPTraceExporter({ url: `${options.otlpEndpoint.replace(/\/$/, "")}/v1/traces` }),
      ),
    );
  }
  const sdk = new NodeSDK({
    serviceName: options.service,
    spanProcessors,
    textMapPropagator: new W3CTraceContextPropagator(),
    // http2 and ESM-loaded grpc are not covered by auto-instrumentation; the Connect interceptor
    // below makes the RPC spans (DESIGN.md, toolchain facts).
    instrumentations: [],
    metricReaders: [],
  });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}

const headerGetter: TextMapGetter<Headers> = {
  keys: (h) => [...h.keys()],
  get: (h, key) => h.get(key) ?? undefined,
};
const headerSetter: TextMapSetter<Headers> = { set: (h, key, value) => h.set(key, value) };

/**
 * Makes a span per RPC and carries `traceparent` across: the client side injects it into the request
 * headers, the server side continues it. Streaming responses run each step inside the span's context
 * and end the span when the stream ends.
 */
export function tracingInterceptor(side: "client" | "server"): Interceptor {
  const tracer = trace.getTracer("fabric-rpc");
  return (next) => async (req) => {
    const parent: Context =
      side === "server" ? propagation.extract(ROOT_CONTEXT, req.header, headerGetter) : context.active();
    const span = tracer.startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: side === "server" ? SpanKind.SERVER : SpanKind.CLIENT,
        attributes: {
          "rpc.system": "grpc",
          "rpc.service": req.service.typeName,
          "rpc.method": req.method.name,
        },
      },
      parent,
    );
    const spanContext = trace.setSpan(parent, span);
    if (side === "client") propagation.inject(spanContext, req.header, headerSetter);
    let res;
    try {
      res = await context.with(spanContext, () => next(req));
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
    if (!res.stream) {
      endSpan(span);
      return res;
    }
    return { ...res, message: inContext(res.message, spanContext, span) };
  };
}

async function* inContext<T>(messages: AsyncIterable<T>, ctx: Context, span: Span): AsyncGenerator<T> {
  const iterator = messages[Symbol.asyncIterator]();
  try {
    for (;;) {
      const step = await context.with(ctx, () => iterator.next());
      if (step.done) break;
      yield step.value;
    }
    endSpan(span);
  } catch (err) {
    endSpan(span, err);
    throw err;
  } finally {
    if (span.isRecording()) {
      // the consumer stopped early (cancelled); the stream is over for tracing purposes
      endSpan(span);
      void iterator.return?.();
    }
  }
}

function endSpan(span: Span, err?: unknown): void {
  if (!span.isRecording()) return;
  if (err) {
    span.setStatus({
      code: SpanStatusCode.ERROR,
      message: err instanceof ConnectError ? err.rawMessage : "error",
    });
  }
  span.end();
}
