// The routes both entry styles serve: worker.js exports the app,
// listener.js registers a fetch listener for it.
import { Hono } from "hono";
import { getCookie } from "hono/cookie";

export const app = new Hono();

// Module state: kept for as long as the instance lives.
let served = 0;

app.get("/", (c) => c.text("Hello from Hono!\n"));

app.get("/users/:id", (c) =>
  c.json({ id: c.req.param("id"), sort: c.req.query("sort") ?? null, agent: c.req.header("user-agent") ?? null }),
);

app.post("/json", async (c) => {
  const body = await c.req.json();
  return c.json({ received: body, keys: Object.keys(body).length }, 201);
});

// The request body, streamed back as it arrives.
app.post("/echo", (c) =>
  new Response(c.req.raw.body, {
    headers: { "content-type": c.req.header("content-type") ?? "application/octet-stream" },
  }),
);

// Counts the bytes of the request body as it streams in.
app.post("/count-bytes", async (c) => {
  let total = 0;
  const reader = c.req.raw.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    total += value.length;
  }
  return c.text(`${total}\n`);
});

// A body made while it is sent: `n` lines, each after a timer.
app.get("/stream/:n", (c) => {
  const n = Number(c.req.param("n"));
  let sent = 0;
  const body = new ReadableStream({
    async pull(controller) {
      if (sent === n) {
        controller.close();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
      sent += 1;
      controller.enqueue(new TextEncoder().encode(`line ${sent}\n`));
    },
  });
  return new Response(body, { headers: { "content-type": "text/plain" } });
});

// Copies of the request made before anything read its headers.
app.get("/copies", (c) => {
  const copied = new Request(c.req.raw);
  const cloned = c.req.raw.clone();
  return c.json({ copied: copied.headers.get("x-test"), cloned: cloned.headers.get("x-test") });
});

// A form body: the engine reads the content type to parse it.
app.post("/form", async (c) => {
  const form = await c.req.raw.formData();
  return c.text(`${form.get("name")} ${form.get("age")}\n`);
});

app.get("/count", (c) => {
  served += 1;
  return c.text(`${served}\n`);
});

app.get("/cookies", (c) => {
  c.header("set-cookie", "a=1; Path=/", { append: true });
  c.header("set-cookie", "b=2; Path=/", { append: true });
  return c.text(`seen ${getCookie(c, "seen") ?? "none"}\n`);
});

app.get("/env/:name", (c) => {
  const value = c.env?.[c.req.param("name")];
  return value === undefined ? c.text("not granted\n", 404) : c.text(`${value}\n`);
});

app.get("/boom", () => {
  throw new Error("the app failed on purpose");
});

app.notFound((c) => c.text("no such route\n", 404));

// Errors reach the component's handler, which answers 500 and logs them,
// as they would a Worker's runtime.
app.onError((error) => {
  throw error;
});
