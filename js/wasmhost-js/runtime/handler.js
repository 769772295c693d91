// The component's wasi:http/incoming-handler, in front of an app written
// against the Fetch API: each request becomes a `Request`, the app's
// `Response` goes back out, both bodies streamed.
//
// componentize-js's own `fetch` event answers once per instance
// (StarlingMonkey issue 247), so a server that reuses instances gets a 502
// from the second request on. A component that exports the handler itself
// serves any number of requests per instance, and the app's module state
// lives as long as the instance, as it does in a Worker.

import * as types from "wasi:http/types@0.2.10";
import { getEnvironment } from "wasi:cli/environment@0.2.10";

// The host's types, swapped for stand-ins while the module warms up at
// build time, when there is no host to call.
const HOST = { ...types, getEnvironment };
let host = HOST;

// Read and write sizes: a read returns what has arrived, up to this much.
const READ_SIZE = 64n * 1024n;

let fetchListener = null;

// Imported before the app, so an app that registers a `fetch` listener (the
// service-worker style) registers it here; other events go where they went.
const engineAddEventListener = globalThis.addEventListener;
globalThis.addEventListener = function addEventListener(type, listener, options) {
  if (type === "fetch") {
    fetchListener = listener;
    return;
  }
  return engineAddEventListener?.call(this, type, listener, options);
};

/// The handler of an app module: its default export's `fetch(request, env,
/// ctx)` (Workers, Deno, Bun, Hono), else the `fetch` listener it
/// registered. `load` gives the module, so that under `wasmhost dev` it can
/// be read when the instance first serves.
export function incomingHandler(load) {
  let app = null;
  let env = null;
  return {
    async handle(incoming, outparam) {
      const answer = new Answer(outparam);
      let request = null;
      try {
        app ??= appOf(await load());
        // The environment of the instance, not of the machine that built it.
        env ??= Object.fromEntries(host.getEnvironment());
        request = toRequest(incoming);
        const waits = [];
        const response = await app(request, env, waits);
        await answer.send(response, request.method === "HEAD");
        if (waits.length > 0) {
          await Promise.allSettled(waits);
        }
      } catch (error) {
        answer.fail(error);
      } finally {
        // The bindings stop tracking a resource for collection once a
        // method is called on it, so the request and its body are dropped
        // here or never: the host would keep every request an instance
        // served.
        request?.[RELEASE]();
        incoming[Symbol.dispose]?.();
      }
    },
  };
}

function appOf(module) {
  const exported = module?.default;
  if (exported && typeof exported.fetch === "function") {
    return (request, env, waits) =>
      exported.fetch(request, env, context(waits));
  }
  if (typeof exported === "function") {
    return (request, env, waits) => exported(request, env, context(waits));
  }
  if (fetchListener) {
    const listener = fetchListener;
    return (request, env, waits) => dispatchEvent(listener, request, waits);
  }
  throw new Error(
    "the app neither default-exports an object with fetch(request) nor registers a fetch listener",
  );
}

/// What Workers pass as `ctx`: work to finish after the response is sent.
function context(waits) {
  return {
    waitUntil(promise) {
      waits.push(promise);
    },
    passThroughOnException() {},
  };
}

function dispatchEvent(listener, request, waits) {
  let responded = null;
  const event = {
    type: "fetch",
    request,
    respondWith(response) {
      if (responded) {
        throw new Error("respondWith was called twice on one fetch event");
      }
      responded = Promise.resolve(response);
    },
    waitUntil(promise) {
      waits.push(promise);
    },
  };
  if (typeof listener === "function") {
    listener(event);
  } else {
    listener.handleEvent(event);
  }
  if (!responded) {
    throw new Error("the fetch listener returned without calling respondWith");
  }
  return responded;
}

// The engine's own accessor, which the request below fills on first use.
const REQUEST_HEADERS = Object.getOwnPropertyDescriptor(Request.prototype, "headers").get;
const RELEASE = Symbol("release");

/// A `Request` whose headers are read from the host when the app first
/// looks at them: reading them costs a fifth of a small request's time in
/// the component's interpreted bindings, and many routes never do. Every
/// way the engine reads them itself (a clone, a form body, a blob's type,
/// an outbound `fetch` or `new Request` of it) fills them first.
class HostRequest extends Request {
  #incoming;
  #releaseBody;

  constructor(url, init, incoming, releaseBody) {
    super(url, init);
    this.#incoming = incoming;
    this.#releaseBody = releaseBody;
  }

  #fill() {
    const incoming = this.#incoming;
    if (!incoming) {
      return;
    }
    this.#incoming = null;
    const fields = incoming.headers();
    const headers = REQUEST_HEADERS.call(this);
    for (const [name, value] of fields.entries()) {
      headers.append(name, isomorphic(value));
    }
    fields[Symbol.dispose]?.();
  }

  get headers() {
    this.#fill();
    return REQUEST_HEADERS.call(this);
  }

  clone() {
    this.#fill();
    return super.clone();
  }

  formData() {
    this.#fill();
    return super.formData();
  }

  blob() {
    this.#fill();
    return super.blob();
  }

  /// The request's handler has returned: the host's request, and what the
  /// app left of its body, may go.
  [RELEASE]() {
    this.#incoming = null;
    this.#releaseBody?.();
  }

  static fill(request) {
    if (#incoming in request) {
      request.#fill();
    }
  }
}

// The engine reads a request's headers itself when it is sent on or copied.
const engineFetch = globalThis.fetch;
if (engineFetch) {
  globalThis.fetch = function fetch(input, init) {
    if (input instanceof HostRequest) {
      HostRequest.fill(input);
    }
    return engineFetch.call(this, input, init);
  };
}
const EngineRequest = Request;
globalThis.Request = new Proxy(EngineRequest, {
  construct(target, [input, init], newTarget) {
    if (input instanceof HostRequest) {
      HostRequest.fill(input);
    }
    return Reflect.construct(target, [input, init], newTarget);
  },
});

function toRequest(incoming) {
  const method = methodOf(incoming.method());
  const scheme = incoming.scheme();
  const protocol = scheme?.tag === "HTTPS" ? "https" : scheme?.tag === "other" ? scheme.val : "http";
  // wasmhost gives every request an authority (the Host header's).
  const authority = incoming.authority() ?? "localhost";
  const url = `${protocol}://${authority}${incoming.pathWithQuery() ?? "/"}`;
  const init = { method };
  let body = null;
  if (method !== "GET" && method !== "HEAD") {
    body = bodyOf(incoming.consume());
    init.body = body.readable;
    init.duplex = "half";
  }
  return new HostRequest(url, init, incoming, body?.release);
}

const METHODS = {
  get: "GET",
  head: "HEAD",
  post: "POST",
  put: "PUT",
  delete: "DELETE",
  connect: "CONNECT",
  options: "OPTIONS",
  trace: "TRACE",
  patch: "PATCH",
};

function methodOf(method) {
  return method.tag === "other" ? method.val : METHODS[method.tag];
}

const DECODER = new TextDecoder();

/// Header bytes as the Fetch API holds them: one character per byte.
function isomorphic(bytes) {
  // The engine's decoder for the usual all-ASCII value (same length, no
  // replacement character); a loop for any other.
  const decoded = DECODER.decode(bytes);
  if (decoded.length === bytes.length && !decoded.includes("\ufffd")) {
    return decoded;
  }
  let text = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096));
  }
  return text;
}

const ENCODER = new TextEncoder();
const NOT_ASCII = /[^\x00-\x7f]/;

function bytesOf(text) {
  // The engine's encoder where UTF-8 and Latin-1 agree; a loop (slow in an
  // interpreter) only for the rare value with other bytes.
  if (!NOT_ASCII.test(text)) {
    return ENCODER.encode(text);
  }
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    bytes[i] = text.charCodeAt(i);
  }
  return bytes;
}

/// The request body as a stream read as the app reads it: nothing is read
/// before the app asks, and never more than one read ahead. `release` lets
/// go of what the app did not read to the end.
function bodyOf(body) {
  let stream = body.stream();
  const release = (finish) => {
    if (!stream) {
      return;
    }
    stream[Symbol.dispose]?.();
    stream = null;
    if (finish) {
      host.IncomingBody.finish(body);
    } else {
      body[Symbol.dispose]?.();
    }
  };
  const readable = new ReadableStream({
    pull(controller) {
      let chunk;
      try {
        chunk = stream.blockingRead(READ_SIZE);
      } catch (error) {
        if (error?.payload?.tag === "closed") {
          release(true);
          controller.close();
        } else {
          controller.error(new Error(`reading the request body: ${describe(error)}`));
        }
        return;
      }
      controller.enqueue(chunk);
    },
    cancel() {
      release(false);
    },
  });
  return { readable, release: () => release(false) };
}

/// One request's answer: the response once it starts, and a 500 if the app
/// fails before it does.
class Answer {
  constructor(outparam) {
    this.outparam = outparam;
    this.started = false;
    // The body's stream and the body, from the head until the body ends.
    this.unfinished = null;
  }

  async send(response, head) {
    if (!(response instanceof Response)) {
      throw new TypeError(`the app answered ${describe(response)}, not a Response`);
    }
    const fields = [];
    for (const [name, value] of response.headers) {
      fields.push([name, bytesOf(value)]);
    }
    const stream = this.#start(response.status, fields);
    if (head || response.status === 204 || response.status === 304) {
      // These have no body on the wire, whatever the app gave, and their
      // content-length may be the one a GET would have: the body is let go
      // unfinished, as the server never reads it.
      await response.body?.cancel();
      this.#drop();
      return;
    }
    if (response.body) {
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        write(stream, typeof value === "string" ? ENCODER.encode(value) : value);
      }
    }
    this.#finish();
  }

  fail(error) {
    // SpiderMonkey's `stack` holds the frames only, not the message.
    const where = error instanceof Error && error.stack ? `\n${error.stack.trimEnd()}` : "";
    console.error(`the app failed: ${describe(error)}${where}`);
    if (this.started) {
      // The head is sent: a body dropped unfinished tells the server to cut
      // the response short rather than end it as if it were whole.
      this.#drop();
      return;
    }
    const stream = this.#start(500, [["content-type", bytesOf("text/plain; charset=utf-8")]]);
    write(stream, ENCODER.encode("Internal Server Error\n"));
    this.#finish();
  }

  /// Sends the head; the body's stream to write to.
  #start(status, fields) {
    const out = new host.OutgoingResponse(host.Fields.fromList(fields));
    // Every call into the host costs microseconds of interpreted glue.
    if (status !== 200) {
      out.setStatusCode(status);
    }
    const body = out.body();
    this.started = true;
    host.ResponseOutparam.set(this.outparam, { tag: "ok", val: out });
    const stream = body.write();
    this.unfinished = [stream, body];
    return stream;
  }

  /// Ends the body whole. No flush: each write is handed on as it is made,
  /// and once a body of declared length is all sent the server may have
  /// let the stream go.
  #finish() {
    const [stream, body] = this.unfinished;
    this.unfinished = null;
    stream[Symbol.dispose]();
    host.OutgoingBody.finish(body, undefined);
  }

  /// Lets the body go unfinished.
  #drop() {
    for (const resource of this.unfinished ?? []) {
      resource[Symbol.dispose]?.();
    }
    this.unfinished = null;
  }
}

/// Writes all of `bytes`, as fast as the server takes them.
function write(stream, bytes) {
  let offset = 0;
  while (offset < bytes.length) {
    const room = Number(stream.checkWrite());
    if (room === 0) {
      const ready = stream.subscribe();
      ready.block();
      ready[Symbol.dispose]?.();
      continue;
    }
    const end = Math.min(bytes.length, offset + room);
    stream.write(bytes.subarray(offset, end));
    offset = end;
  }
}

function describe(value) {
  if (value instanceof Error) {
    return `${value.name}: ${value.message}`;
  }
  if (value?.payload !== undefined) {
    // A wasi error (ComponentError): its payload says which.
    return JSON.stringify(value.payload, (_, v) => (typeof v === "bigint" ? Number(v) : v));
  }
  return value === null ? "null" : typeof value === "object" ? Object.prototype.toString.call(value) : `${typeof value} ${String(value)}`;
}

// A fresh instance runs the adapter's functions, and the engine's own for
// Request, Response and streams, for the first time on its one request:
// compiling them then cost more than the request. One request through
// stand-ins for the host, at build time, leaves them compiled in the
// snapshot every instance starts from. The app is not called.
function warmUp() {
  const disposable = { [Symbol.dispose]() {} };
  const sink = {
    ...disposable,
    checkWrite: () => 65536n,
    write() {},
    subscribe: () => ({ ...disposable, block() {} }),
  };
  const body = { ...disposable, write: () => sink };
  host = {
    Fields: { fromList: (list) => list },
    OutgoingResponse: class {
      setStatusCode() {}
      body() {
        return body;
      }
    },
    ResponseOutparam: { set() {} },
    OutgoingBody: { finish() {} },
    IncomingBody: { finish() {} },
    getEnvironment: () => [],
  };
  const incoming = {
    method: () => ({ tag: "post" }),
    headers: () => ({ ...disposable, entries: () => [["content-type", ENCODER.encode("text/plain")]] }),
    scheme: () => ({ tag: "HTTP" }),
    authority: () => "localhost",
    pathWithQuery: () => "/?warm",
    consume: () => ({
      ...disposable,
      stream() {
        let sent = false;
        return {
          ...disposable,
          blockingRead() {
            if (sent) {
              throw { payload: { tag: "closed" } };
            }
            sent = true;
            return ENCODER.encode("warm");
          },
        };
      },
    }),
  };
  const handler = incomingHandler(() => ({
    default: {
      async fetch(request) {
        return new Response(await request.text(), { status: 201, headers: { "content-type": "text/plain" } });
      },
    },
  }));
  const done = () => {
    host = HOST;
  };
  handler.handle(incoming, {}).then(done, done);
}

warmUp();
