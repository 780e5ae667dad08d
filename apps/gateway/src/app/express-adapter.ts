import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import type { NestApplicationOptions } from '@nestjs/common';
import { ExpressAdapter } from '@nestjs/platform-express';
import type { Express } from 'express';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a mixin's base takes any arguments
type Constructor = new (...args: any[]) => object;

/**
 * Express's adapter with an HTTP server whose requests and responses are built on Express's own
 * prototypes. Express gives each one its prototype with Object.setPrototypeOf and then adds its
 * properties (req.next, req.params, res.locals, ...); V8 then gives every such object a hidden
 * class of its own: about 2.2 KiB per open stream in a heap snapshot of 2,000 streams, and every
 * property read on a request or response a lookup its caches cannot keep. Built on the prototype
 * Express would give them, its setPrototypeOf changes nothing and they share their hidden classes.
 */
export class GatewayExpressAdapter extends ExpressAdapter {
  override initHttpServer(options: NestApplicationOptions): void {
    // TLS or tracked connections (neither is used here): Express's own server.
    if (options.httpsOptions || options.forceCloseConnections) return super.initHttpServer(options);
    const app = this.getInstance<Express>();
    const Request = standIn(IncomingMessage, app.request);
    const Response = standIn(ServerResponse, app.response);
    app.request = Request.prototype as Express['request'];
    app.response = Response.prototype as Express['response'];
    this.setHttpServer(createServer({ IncomingMessage: Request as typeof IncomingMessage, ServerResponse: Response as typeof ServerResponse }, app));
  }
}

/**
 * A subclass of `base` whose prototype inherits `prototype`, to stand in for it. A class, not a
 * function given `prototype`: V8 sizes a subclass's objects from its base's constructor, and a
 * bare function's objects, with no room for the base's fields, fall into dictionary mode.
 */
export function standIn<C extends Constructor>(base: C, prototype: object): C {
  const Sub = class extends base {};
  Object.setPrototypeOf(Sub.prototype, prototype);
  // Heap snapshots and stack traces keep naming them as Node does.
  Object.defineProperty(Sub, 'name', { value: base.name });
  return Sub;
}
