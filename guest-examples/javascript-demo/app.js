// The demo app in JavaScript: a Hono app, exported as Workers, Deno and Bun
// take one. wasmhost-js bundles it with Hono and builds the component.
import { Hono } from "hono";

const app = new Hono();

app.get("/", (c) => c.text("Hello from JavaScript!\n"));

app.get("/hello/:name", (c) => c.body(JSON.stringify({ hello: c.req.param("name") }) + "\n", 200, {
  "content-type": "application/json",
}));

// The request's body stream, handed straight to the response: streamed
// back as it arrives.
app.post("/echo", (c) =>
  new Response(c.req.raw.body, {
    headers: { "content-type": c.req.header("content-type") ?? "application/octet-stream" },
  }),
);

// `c.env` is the instance's environment: only the variables wasmhost grants.
app.get("/env/:name", (c) => {
  const value = c.env[c.req.param("name")];
  return value === undefined ? c.text("no such variable granted\n", 404) : c.text(`${value}\n`);
});

app.notFound((c) => c.text("not found\n", 404));

export default app;
