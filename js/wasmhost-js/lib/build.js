// `wasmhost-js build`: bundles an app's module and its npm imports with
// esbuild, puts the component's own incoming handler in front of it, and
// has componentize-js make the component.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..");
const HANDLER = join(ROOT, "runtime", "handler.js");
const DEV = join(ROOT, "runtime", "dev.js");
const WIT = join(ROOT, "wit");
const WORLD = "app";
/// The bundle a dev build's instances read.
const DEV_BUNDLE = "app.js";

/// A failure the user can act on: printed as one line, without a stack.
export class BuildError extends Error {}

/// Builds `entry` into the component `output`. With `dev`, the component
/// holds only the engine and a loader, rebuilt only when wasmhost-js
/// changes, and the app's bundle is written beside it (`.wasmhost/dev/` for
/// `.wasmhost/dev.wasm`), read by each new instance at `sourceAt`.
export async function build({ entry, output, dev = false, sourceAt = "/app", log = console.log }) {
  const started = Date.now();
  entry = resolve(entry);
  output = resolve(output);
  if (!existsSync(entry) || !statSync(entry).isFile()) {
    throw new BuildError(`${entry}: no such file; give the app's entry module, e.g. src/index.js`);
  }
  if (!output.endsWith(".wasm")) {
    throw new BuildError(`-o ${output}: name the component file, ending in .wasm`);
  }
  if (!sourceAt.startsWith("/")) {
    throw new BuildError(`--source-at ${sourceAt}: give the absolute guest path, e.g. /app`);
  }
  mkdirSync(dirname(output), { recursive: true });
  if (dev) {
    return devBuild({ entry, output, sourceAt: sourceAt.replace(/(.)\/+$/, "$1"), log, started });
  }
  const work = mkdtempSync(join(tmpdir(), "wasmhost-js-"));
  try {
    const bundle = join(work, "app.js");
    await bundleApp({
      stdin: {
        contents: [
          // The handler first: it catches a `fetch` listener the app registers.
          `import { incomingHandler as serve } from ${JSON.stringify(HANDLER)};`,
          `import * as app from ${JSON.stringify(entry)};`,
          "export const incomingHandler = serve(() => app);",
        ].join("\n"),
        resolveDir: dirname(entry),
        sourcefile: "wasmhost-js-entry.js",
      },
      format: "esm",
      outfile: bundle,
    });
    const bytes = await componentize(bundle);
    replace(output, bytes);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  log(`wasmhost-js: built ${shown(output)} (${kib(output)} KiB) from ${shown(entry)} in ${seconds(started)} s`);
}

async function devBuild({ entry, output, sourceAt, log, started }) {
  const files = output.replace(/\.wasm$/, "");
  mkdirSync(files, { recursive: true });
  await bundleApp({
    entryPoints: [entry],
    format: "cjs",
    outfile: join(files, `.${DEV_BUNDLE}.building`),
  });
  // An instance starting now reads the old bundle or the new, never half.
  renameSync(join(files, `.${DEV_BUNDLE}.building`), join(files, DEV_BUNDLE));
  const key = devKey(sourceAt);
  const stamp = join(files, "built-from");
  const current = existsSync(output) && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === key;
  if (!current) {
    const work = mkdtempSync(join(tmpdir(), "wasmhost-js-"));
    try {
      const loader = join(work, "dev.js");
      writeFileSync(
        loader,
        [
          `import { incomingHandler as serve } from ${JSON.stringify(HANDLER)};`,
          `import { bundleAt } from ${JSON.stringify(DEV)};`,
          `export const incomingHandler = serve(bundleAt(${JSON.stringify(sourceAt)}, ${JSON.stringify(DEV_BUNDLE)}));`,
        ].join("\n"),
      );
      const bundle = join(work, "loader.js");
      await bundleApp({ entryPoints: [loader], format: "esm", outfile: bundle });
      replace(output, await componentize(bundle));
      writeFileSync(stamp, `${key}\n`);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  const what = current ? "the component is current" : `built ${shown(output)} (${kib(output)} KiB), a dev build`;
  log(
    `wasmhost-js: bundled ${shown(entry)} into ${shown(join(files, DEV_BUNDLE))} in ${seconds(started)} s; ${what}: ` +
      `its instances read the bundle at ${sourceAt}/${DEV_BUNDLE} ([app.dev] dirs grant ${shown(files)} there)`,
  );
}

/// What a dev component is made of: this package's runtime and WIT, the
/// componentize-js it is built with, and where it reads the bundle.
function devKey(sourceAt) {
  const hash = createHash("sha256");
  for (const file of [HANDLER, DEV, join(ROOT, "package.json"), ...witFiles(WIT)]) {
    hash.update(file.slice(ROOT.length)).update("\0").update(readFileSync(file)).update("\0");
  }
  hash.update(componentizeVersion()).update("\0").update(sourceAt);
  return hash.digest("hex").slice(0, 16);
}

function witFiles(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((item) => (item.isDirectory() ? witFiles(join(dir, item.name)) : [join(dir, item.name)]));
}

function componentizeVersion() {
  const main = fileURLToPath(import.meta.resolve("@bytecodealliance/componentize-js"));
  return JSON.parse(readFileSync(join(dirname(main), "..", "package.json"), "utf8")).version;
}

async function bundleApp(options) {
  const esbuild = await dependency("esbuild");
  let result;
  try {
    result = await esbuild.build({
      bundle: true,
      platform: "neutral",
      // What Worker-style packages publish for runtimes without Node's APIs.
      conditions: ["workerd", "worker", "browser"],
      mainFields: ["browser", "module", "main"],
      target: "es2022",
      // componentize-js links these to the component's imports.
      external: ["wasi:*"],
      logLevel: "silent",
      ...options,
    });
  } catch (failure) {
    const first = failure.errors?.[0];
    if (!first) {
      throw failure;
    }
    const where = first.location ? `${first.location.file}:${first.location.line}:${first.location.column}: ` : "";
    const more = failure.errors.length > 1 ? ` (and ${failure.errors.length - 1} more)` : "";
    const hint = /Could not resolve "(?!node:)/.test(first.text) ? "; run npm install" : "";
    throw new BuildError(`bundling: ${where}${first.text}${hint}${more}`);
  }
  return result;
}

async function componentize(sourcePath) {
  const { componentize } = await dependency("@bytecodealliance/componentize-js");
  try {
    const { component } = await componentize({ sourcePath, witPath: WIT, worldName: WORLD });
    return component;
  } catch (failure) {
    // componentize-js reports a failure of the app's top-level code with
    // the engine's whole output; its first lines say what failed.
    const lines = String(failure?.message ?? failure).trim().split("\n");
    const thrown = lines.findIndex((line) => line.includes("Exception while evaluating top-level script"));
    if (thrown >= 0 && lines[thrown + 1]) {
      // The module's top-level code runs once, at build time, in the engine.
      throw new BuildError(
        `the app's top-level code threw when it ran at build time: ${lines[thrown + 1].trim()} (line:column of the bundle)`,
      );
    }
    throw new BuildError(`componentize-js: ${lines.slice(0, 6).join(" | ")}`);
  }
}

/// One of wasmhost-js's own dependencies, loaded when first needed (a dev
/// rebuild needs only esbuild).
async function dependency(name) {
  try {
    return await import(name);
  } catch (failure) {
    if (failure?.code === "ERR_MODULE_NOT_FOUND") {
      throw new BuildError(
        `${name}, which wasmhost-js needs, is not installed: install wasmhost-js with ` +
          "`npm install --install-links PATH/js/wasmhost-js` (npm links a folder without its dependencies otherwise)",
      );
    }
    throw failure;
  }
}

/// Writes `path` whole or not at all: a server watching it never loads half.
function replace(path, bytes) {
  const building = join(dirname(path), `.${basename(path)}.building`);
  writeFileSync(building, bytes);
  renameSync(building, path);
}

function shown(path) {
  const near = relative(process.cwd(), path);
  return near.startsWith("..") ? path : near;
}

function kib(path) {
  return Math.round(statSync(path).size / 1024);
}

function seconds(started) {
  return ((Date.now() - started) / 1000).toFixed(1);
}
