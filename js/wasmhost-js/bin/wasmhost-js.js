#!/usr/bin/env node
// wasmhost-js build ENTRY.js -o app.wasm [--dev [--source-at /app]]

import { parseArgs } from "node:util";
import { build, BuildError } from "../lib/build.js";

const USAGE = `usage: wasmhost-js build ENTRY.js -o OUTPUT.wasm [--dev [--source-at GUEST_DIR]]

ENTRY is an ES module that default-exports an object with fetch(request, env, ctx)
(Workers, Deno, Bun, Hono's \`export default app\`) or registers a fetch event
listener. Its npm imports are bundled; the result is a wasi:http component
whose instances serve any number of requests (wasmhost serve --reuse N).

  -o, --output FILE     the component to write
  --dev                 for wasmhost dev: the app's bundle is written beside the
                        component (.wasmhost/dev/ for .wasmhost/dev.wasm) and read
                        by each new instance, so an edit rebuilds only the bundle
  --source-at DIR       with --dev: where the instance reads it (default /app)`;

function fail(message) {
  console.error(`wasmhost-js: ${message}`);
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      output: { type: "string", short: "o" },
      dev: { type: "boolean", default: false },
      "source-at": { type: "string", default: "/app" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
} catch (error) {
  fail(`${error.message}\n${USAGE}`);
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const [command, entry, ...extra] = positionals;
if (command !== "build") {
  fail(`${command === undefined ? "no command" : `unknown command ${command}`}: the command is build\n${USAGE}`);
}
if (!entry || extra.length > 0) {
  fail(`build takes one ENTRY module\n${USAGE}`);
}
if (!values.output) {
  fail(`build needs -o OUTPUT.wasm, the component to write`);
}
try {
  await build({ entry, output: values.output, dev: values.dev, sourceAt: values["source-at"] });
} catch (error) {
  if (error instanceof BuildError) {
    fail(error.message);
  }
  throw error;
}
