// A dev build's app: not in the component, but read from the bundle each
// build writes (a CommonJS file in the directory granted at the source
// path) when an instance serves its first request. An edit then needs only
// the bundle rebuilt, not SpiderMonkey pre-initialised and compiled again.

import { getDirectories } from "wasi:filesystem/preopens@0.2.10";
// The interfaces an app may import, handed to the bundle's `require`: the
// bundle cannot import them itself, being evaluated, not linked.
import * as environment from "wasi:cli/environment@0.2.10";
import * as outgoingHandler from "wasi:http/outgoing-handler@0.2.10";
import * as types from "wasi:http/types@0.2.10";
import * as preopens from "wasi:filesystem/preopens@0.2.10";

const PROVIDED = {
  "wasi:cli/environment@0.2.10": environment,
  "wasi:http/outgoing-handler@0.2.10": outgoingHandler,
  "wasi:http/types@0.2.10": types,
  "wasi:filesystem/preopens@0.2.10": preopens,
};

/// A loader of the bundle `name` in the guest directory `at`.
export function bundleAt(at, name) {
  return () => {
    const path = `${at}/${name}`;
    let bytes;
    try {
      bytes = read(at, name);
    } catch (error) {
      const why = error?.payload === undefined ? error.message : JSON.stringify(error.payload);
      throw new Error(`${path}: cannot read the app's bundle (${why}); is wasmhost-js build --dev running?`);
    }
    const source = new TextDecoder().decode(bytes);
    const module = { exports: {} };
    const require = (specifier) => {
      const provided = PROVIDED[specifier.replace(/@0\.2\.\d+$/, "@0.2.10")];
      if (!provided) {
        throw new Error(
          `${path}: imports ${specifier}, which a dev build does not provide; ` +
            `it provides ${Object.keys(PROVIDED).join(", ")}`,
        );
      }
      return provided;
    };
    // The sourceURL names the bundle in stack traces.
    new Function("require", "module", "exports", `${source}\n//# sourceURL=${path}`)(
      require,
      module,
      module.exports,
    );
    return module.exports;
  };
}

function read(at, name) {
  const granted = getDirectories().find(([, path]) => path === at);
  if (!granted) {
    throw new Error(
      `a dev build reads the app from ${at}, which is not granted; ` +
        `wasmhost dev grants it by the dirs of [app.dev] in wasmhost.toml`,
    );
  }
  const file = granted[0].openAt({ symlinkFollow: true }, name, {}, { read: true });
  try {
    const chunks = [];
    let offset = 0n;
    for (;;) {
      const [chunk, end] = file.read(1024n * 1024n, offset);
      chunks.push(chunk);
      offset += BigInt(chunk.length);
      if (end || chunk.length === 0) {
        break;
      }
    }
    const whole = new Uint8Array(Number(offset));
    let at = 0;
    for (const chunk of chunks) {
      whole.set(chunk, at);
      at += chunk.length;
    }
    return whole;
  } finally {
    file[Symbol.dispose]?.();
  }
}
