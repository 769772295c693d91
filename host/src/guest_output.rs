//! Guest stdout and stderr: copied to the host's own streams line by line,
//! each line prefixed with the app it came from, so the output of concurrent
//! requests and different apps can be told apart.

use bytes::Bytes;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Which host stream a guest stream goes to.
#[derive(Clone, Copy, Debug)]
pub enum Sink {
    Stdout,
    Stderr,
}

/// One guest stream of one instance. A line split across several writes is
/// reassembled before it is printed, so lines from concurrent instances never
/// interleave mid-line.
#[derive(Clone)]
pub struct GuestOutput {
    sink: Sink,
    /// `[app] ` or `[app] stderr: `, shared by every instance of the app.
    prefix: Arc<str>,
}

impl GuestOutput {
    pub fn new(sink: Sink, prefix: Arc<str>) -> Self {
        Self { sink, prefix }
    }

    fn stream(&self) -> LineWriter {
        LineWriter {
            sink: self.sink,
            prefix: self.prefix.clone(),
            partial: Vec::new(),
        }
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

/// Longest partial line kept while waiting for its newline; a guest that
/// never writes one still gets its output printed in pieces of this size.
const MAX_PARTIAL_LINE: usize = 16 * 1024;

struct LineWriter {
    sink: Sink,
    prefix: Arc<str>,
    partial: Vec<u8>,
}

impl LineWriter {
    fn write_bytes(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = bytes.split_at(end + 1);
            self.partial.extend_from_slice(line);
            self.emit();
            bytes = rest;
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() >= MAX_PARTIAL_LINE {
            self.partial.push(b'\n');
            self.emit();
        }
    }

    fn emit(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let mut line = Vec::with_capacity(self.prefix.len() + self.partial.len());
        line.extend_from_slice(self.prefix.as_bytes());
        line.append(&mut self.partial);
        // Guest output is best effort: a closed host stdout must not fail
        // the request that printed.
        let _ = match self.sink {
            Sink::Stdout => std::io::stdout().lock().write_all(&line),
            Sink::Stderr => std::io::stderr().lock().write_all(&line),
        };
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            self.emit();
        }
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
        mut self: Pin<&mut Self>,
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
