// The module-worker style: Cloudflare Workers, Deno and Bun take this.
import { app } from "./routes.js";

export default app;
