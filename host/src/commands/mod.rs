//! The commands, and the wiring of everything else: `serve` (and `dev`,
//! which also runs the apps' builds through `dev`), `check`, `new`
//! (`scaffold`), `nginx`; what they share with a running server: `reload`
//! (watch and swap in new versions), `signals`, `systemd`, `logging`,
//! `runtimes` (the server's runtime and the connection workers). The
//! serving itself is `http::server::run`.

pub mod check;
pub mod dev;
pub mod logging;
pub mod nginx;
pub mod reload;
pub mod runtimes;
pub mod scaffold;
pub mod serve;
pub mod signals;
pub mod systemd;
