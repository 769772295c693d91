// Built with componentize-js directly, without wasmhost-js: its own fetch
// event, which answers once per instance (StarlingMonkey issue 247).
let served = 0;

addEventListener("fetch", (event) => {
  served += 1;
  event.respondWith(new Response(`served ${served}\n`));
});
