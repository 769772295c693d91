// The service-worker style: a fetch event listener.
import { app } from "./routes.js";

addEventListener("fetch", (event) => {
  event.respondWith(app.fetch(event.request));
});
