import { getEnvironment } from "wasi:cli/environment@0.2.10";

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(request) {
  const path = new URL(request.url).pathname;
  if (path === "/echo") {
    if (request.method !== "POST") return text(405, "use POST\n");
    const type = request.headers.get("content-type") ?? "application/octet-stream";
    return new Response(request.body, { headers: { "content-type": type } });
  }
  if (request.method !== "GET") return text(404, "not found\n");
  if (path === "/") return text(200, "Hello from JavaScript!\n");
  if (path.startsWith("/hello/")) {
    const name = decodeURIComponent(path.slice("/hello/".length));
    return new Response(JSON.stringify({ hello: name }) + "\n", {
      headers: { "content-type": "application/json" },
    });
  }
  if (path.startsWith("/env/")) {
    const name = decodeURIComponent(path.slice("/env/".length));
    const found = getEnvironment().find(([key]) => key === name);
    return found ? text(200, found[1] + "\n") : text(404, "no such variable granted\n");
  }
  return text(404, "not found\n");
}

function text(status, body) {
  return new Response(body, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}
