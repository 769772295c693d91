//! Guest stdout and stderr: copied to the host's own streams line by line,
//! each line prefixed with the app it came from, so the output of concurrent
//! requests and different apps can be told apart.
//!
//! A guest writes whatever it likes, so each line is made safe before it is
//! printed: control characters are escaped (a carriage return or a terminal
//! escape cannot rewrite what an operator sees), a line is cut at
//! `MAX_LINE`, and an app may print `LINES_PER_SECOND` lines a second
//! (bursts of up to `BURST`); what is over is dropped and counted, and the
//! count said on the app's next line. Under `--log-format json` each line
//! is a JSON object of the server's log (stderr) with the app and stream.

use bytes::Bytes;
use parking_lot::Mutex;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line printed; the rest of a longer one is cut and said so.
const MAX_LINE: usize = 4 * 1024;
/// Lines an app may print a second, all its instances together.
const LINES_PER_SECOND: f64 = 100.0;
/// Lines an app may print at once after a quiet spell.
const BURST: f64 = 1000.0;

/// Guest lines are JSON log events (`--log-format json`).
static JSON: AtomicBool = AtomicBool::new(false);

/// Makes guest lines JSON events of the server's log.
pub fn log_as_json() {
    JSON.store(true, Ordering::Relaxed);
}

/// Which host stream a guest stream goes to.
#[derive(Clone, Copy, Debug)]
pub enum Sink {
    Stdout,
    Stderr,
}

/// What every instance of one app prints through.
pub struct AppOutput {
    route: Arc<str>,
    stdout_prefix: Box<str>,
    stderr_prefix: Box<str>,
    budget: Mutex<Budget>,
}

/// A token bucket of lines, and what it has turned away.
struct Budget {
    tokens: f64,
    filled: Instant,
    dropped: u64,
}

impl AppOutput {
    pub fn new(route: &Arc<str>) -> Arc<Self> {
        Arc::new(Self {
            route: route.clone(),
            stdout_prefix: format!("[{route}] ").into(),
            stderr_prefix: format!("[{route}] stderr: ").into(),
            budget: Mutex::new(Budget {
                tokens: BURST,
                filled: Instant::now(),
                dropped: 0,
            }),
        })
    }

    /// Whether a line may be printed now, and how many were dropped since
    /// the last one that was.
    fn admit(&self) -> Option<u64> {
        let mut budget = self.budget.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(budget.filled).as_secs_f64();
        budget.tokens = (budget.tokens + elapsed * LINES_PER_SECOND).min(BURST);
        budget.filled = now;
        if budget.tokens < 1.0 {
            budget.dropped += 1;
            return None;
        }
        budget.tokens -= 1.0;
        Some(std::mem::take(&mut budget.dropped))
    }

    /// Prints one line of `sink` (the first bytes of it, `length` in all,
    /// without its newline) if the budget has room.
    fn print(&self, sink: Sink, line: &[u8], length: usize) {
        let Some(dropped) = self.admit() else {
            return;
        };
        if dropped > 0 {
            self.write(
                sink,
                &format!(
                    "({dropped} lines of guest output dropped: an app may print {LINES_PER_SECOND} a second)"
                ),
            );
        }
        let shown = &line[..line.len().min(MAX_LINE)];
        let cut = length - shown.len();
        let mut text = String::from_utf8_lossy(shown).into_owned();
        if cut > 0 {
            text.push_str(&format!(" … ({cut} more bytes cut)"));
        }
        self.write(sink, &text);
    }

    fn write(&self, sink: Sink, text: &str) {
        let stream = match sink {
            Sink::Stdout => "stdout",
            Sink::Stderr => "stderr",
        };
        // JSON escapes control characters itself.
        if JSON.load(Ordering::Relaxed) {
            tracing::info!(target: "guest", app = %self.route, stream, "{text}");
            return;
        }
        let text = escape(text);
        let prefix = match sink {
            Sink::Stdout => &self.stdout_prefix,
            Sink::Stderr => &self.stderr_prefix,
        };
        let mut line = String::with_capacity(prefix.len() + text.len() + 1);
        line.push_str(prefix);
        line.push_str(&text);
        line.push('\n');
        // Guest output is best effort: a closed host stdout must not fail
        // the request that printed.
        let _ = match sink {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
        };
    }
}

/// `text` with its control characters (a tab aside) written as escapes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => escaped.push(c),
            '\r' => escaped.push_str("\\r"),
            c if c.is_control() => escaped.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => escaped.push(c),
        }
    }
    escaped
}

/// One guest stream of one instance. Every handle the guest opens on it
/// (Rust's `print!` opens one per call) writes into the same line, so a
/// line split across writes and handles is printed whole, and lines from
/// concurrent instances never interleave mid-line. What is left of a line
/// when the instance ends is printed then.
#[derive(Clone)]
pub struct GuestOutput {
    line: Arc<Mutex<Line>>,
}

impl GuestOutput {
    pub fn new(sink: Sink, app: Arc<AppOutput>) -> Self {
        Self {
            line: Arc::new(Mutex::new(Line {
                sink,
                app,
                partial: Vec::new(),
                length: 0,
            })),
        }
    }

    fn stream(&self) -> LineWriter {
        LineWriter(self.line.clone())
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.stream())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.stream())
    }
}

/// The line a guest stream is writing.
struct Line {
    sink: Sink,
    app: Arc<AppOutput>,
    /// The line so far, up to `MAX_LINE` bytes of it.
    partial: Vec<u8>,
    /// The length of the line so far.
    length: usize,
}

impl Line {
    fn write_bytes(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..end]);
            // An empty line is a line too (`println!()`).
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes);
    }

    /// Keeps what fits of `bytes` in the line so far.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.length += bytes.len();
    }

    fn emit(&mut self) {
        self.app.print(self.sink, &self.partial, self.length);
        self.partial.clear();
        self.length = 0;
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.length > 0 {
            self.emit();
        }
    }
}

/// One handle on a guest stream.
struct LineWriter(Arc<Mutex<Line>>);

impl LineWriter {
    fn write_bytes(&self, bytes: &[u8]) {
        self.0.lock().write_bytes(bytes);
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_kept() {
        assert_eq!(escape("plain\ttab"), "plain\ttab");
        assert_eq!(escape("over\rwrite"), "over\\rwrite");
        assert_eq!(escape("\u{1b}[2Jcleared"), "\\u{1b}[2Jcleared");
        assert_eq!(escape("é ✓"), "é ✓");
    }

    #[test]
    fn an_app_prints_its_burst_then_its_rate_and_counts_the_rest() {
        let app = AppOutput::new(&Arc::from("/"));
        let admitted = (0..1500).filter(|_| app.admit().is_some()).count();
        assert!((1000..1010).contains(&admitted), "{admitted}");
        assert!(app.budget.lock().dropped >= 490);
    }

    #[test]
    fn a_long_line_is_kept_to_its_bound_and_marked_cut() {
        let output = GuestOutput::new(Sink::Stdout, AppOutput::new(&Arc::from("/")));
        output.stream().write_bytes(&vec![b'x'; 3 * MAX_LINE]);
        let line = || output.line.lock();
        assert_eq!(line().partial.len(), MAX_LINE);
        assert_eq!(line().length, 3 * MAX_LINE);
        output.stream().write_bytes(b"\nnext");
        assert_eq!(line().partial, b"next");
        assert_eq!(line().length, 4);
    }

    #[test]
    fn a_line_written_through_several_handles_stays_one_line() {
        let output = GuestOutput::new(Sink::Stderr, AppOutput::new(&Arc::from("/")));
        for piece in ["start a print ", "1", "2"] {
            // A handle each, dropped after its write, as `eprint!` does.
            output.stream().write_bytes(piece.as_bytes());
        }
        assert_eq!(output.line.lock().partial, b"start a print 12");
        output.stream().write_bytes(b"\n");
        assert_eq!(output.line.lock().length, 0);
    }
}
