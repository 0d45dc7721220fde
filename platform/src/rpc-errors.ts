import type { Interceptor } from "@connectrpc/connect";
import { isClientError, toConnectError } from "./errors.js";
import type { Logger } from "./logger.js";
import { kPeer } from "./principal.js";
import { undecodableRequest } from "./request-decoding.js";

/**
 * Maps whatever a handler throws through the one error mapper, and logs it: caller mistakes at debug,
 * server faults at error with the original cause (which never goes back to the caller).
 */
export function errorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const report = (err: unknown) => {
      // A streamed request message is decoded as the handler reads it, inside this interceptor.
      const mapped = (req.stream && undecodableRequest(err)) || toConnectError(err);
      const peer = req.contextValues.get(kPeer);
      const principal =
        peer.state === "verified" ? `${peer.principal.kind}/${peer.principal.id}` : peer.state;
      if (isClientError(mapped))
        logger.debug({ method, principal, code: mapped.code, msg: mapped.rawMessage }, "rpc refused");
      else logger.error({ method, principal, err }, "rpc failed");
      return mapped;
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      throw report(err);
    }
    if (!res.stream) return res;
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } catch (err) {
          throw report(err);
        }
      })(),
    };
  };
}
