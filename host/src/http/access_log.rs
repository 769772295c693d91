//! The access log: one line per request in the combined format nginx,
//! Apache and CherryPy write, so tools that read theirs (goaccess,
//! fail2ban, logwatch) read ours, plus the request's duration in seconds
//! and the app that served it:
//!
//! ```text
//! 192.0.2.1 - - [25/Nov/2026:03:14:20 +0000] "GET /api/items?id=3 HTTP/1.1" 200 512 "-" "curl/8.5.0" 0.002 /api
//! ```
//!
//! A line is written when the response has been sent (or cut), so the byte
//! count and duration are the real ones. Lines go through a channel to a
//! thread of their own that formats and writes them in batches, like
//! nginx's `access_log ... buffer= flush=`: a request never waits on the
//! disk, and a line is in the file within `FLUSH_INTERVAL`. Writing and
//! waking the writer per line cost a third of a hello app's throughput.

use crate::config::Destination;
use crate::http::forwarded::X_REQUEST_ID;
use http::header::{HeaderValue, REFERER, USER_AGENT};
use http::uri::PathAndQuery;
use http::{Method, Request, Version};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a line may wait to be written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// An open access log.
#[derive(Debug)]
pub struct AccessLog {
    lines: mpsc::Sender<Line>,
    /// Set by [`AccessLog::reopen`]; the writer opens the file again before
    /// its next line.
    reopen: Arc<AtomicBool>,
}

/// The writer thread, to wait for when shutting down.
pub struct Writer {
    done: mpsc::Receiver<()>,
}

impl Writer {
    /// Once every `AccessLog` and `Record` is gone, waits up to `timeout`
    /// for the last lines to be written.
    pub fn wait(self, timeout: Duration) {
        let _ = self.done.recv_timeout(timeout);
    }
}

impl AccessLog {
    /// Opens `destination` (appending to a file) and starts its writer;
    /// `None` if it is off.
    pub fn open(destination: &Destination) -> anyhow::Result<Option<(AccessLog, Writer)>> {
        let (out, path): (Box<dyn Write + Send>, _) = match destination {
            Destination::Off => return Ok(None),
            Destination::Stdout => (Box::new(std::io::stdout()), None),
            Destination::File(path) => (Box::new(open_file(path)?), Some(path.clone())),
        };
        let (lines, received) = mpsc::channel::<Line>();
        let (finished, done) = mpsc::channel();
        let reopen = Arc::new(AtomicBool::new(false));
        let target = Target {
            path,
            reopen: reopen.clone(),
        };
        std::thread::Builder::new()
            .name("wasmhost-access-log".into())
            .spawn(move || {
                write_lines(out, received, target);
                drop(finished);
            })
            .map_err(|e| anyhow::anyhow!("cannot start the access log writer: {e}"))?;
        Ok(Some((AccessLog { lines, reopen }, Writer { done })))
    }

    /// Opens the file again (by its name) before the next line: after
    /// logrotate has renamed it, lines go to the new file, none is lost.
    /// Standard output is left as it is.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Starts the record of a request: what it asked, from where, when.
    /// Only cheap clones here (the URI and headers share their bytes); the
    /// line is formatted by the writer thread.
    pub fn begin<B>(&self, request: &Request<B>, client: IpAddr, app: Arc<str>) -> Record {
        Record {
            lines: self.lines.clone(),
            started: Instant::now(),
            line: Some(Line {
                client,
                at: SystemTime::UNIX_EPOCH,
                method: request.method().clone(),
                target: request.uri().path_and_query().cloned(),
                version: request.version(),
                referer: request.headers().get(REFERER).cloned(),
                agent: request.headers().get(USER_AGENT).cloned(),
                app,
                request_id: request.headers().get(X_REQUEST_ID).cloned(),
                status: 0,
                bytes: 0,
                seconds: 0.0,
            }),
        }
    }
}

fn open_file(path: &PathBuf) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open access log {}: {e}; check --access-log (a file, `-` or `off`)",
                path.display()
            )
        })
}

/// Waits for a line, gives the next ones `FLUSH_INTERVAL` to arrive
/// (sleeping, so senders meanwhile wake nobody), writes them all and
/// flushes; ends when every sender is gone and all is written.
fn write_lines(out: Box<dyn Write + Send>, lines: mpsc::Receiver<Line>, target: Target) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut clock = FormattedSecond::default();
    while let Ok(line) = lines.recv() {
        if target.reopen.swap(false, Ordering::AcqRel)
            && let Some(path) = &target.path
        {
            match open_file(path) {
                Ok(file) => {
                    let _ = out.flush();
                    out = BufWriter::with_capacity(64 * 1024, Box::new(file));
                    tracing::info!("reopened the access log {}", path.display());
                }
                Err(error) => {
                    tracing::error!("{error:#}; writing on to the file open before");
                }
            }
        }
        let mut result = line.write(&mut out, &mut clock);
        std::thread::sleep(FLUSH_INTERVAL);
        while let Ok(line) = lines.try_recv() {
            result = result.and_then(|()| line.write(&mut out, &mut clock));
        }
        if let Err(error) = result.and_then(|()| out.flush()) {
            tracing::error!("cannot write the access log: {error}; access logging stopped");
            return;
        }
    }
}

/// Where the writer writes, for reopening it.
struct Target {
    /// The file, if the log is one.
    path: Option<PathBuf>,
    reopen: Arc<AtomicBool>,
}

/// One request's record, sent to the writer when dropped: after its
/// response is sent.
pub struct Record {
    lines: mpsc::Sender<Line>,
    started: Instant,
    /// Always there until the drop sends it.
    line: Option<Line>,
}

impl Record {
    pub fn set_status(&mut self, status: u16) {
        if let Some(line) = &mut self.line {
            line.status = status;
        }
    }

    /// Counts body bytes sent.
    pub fn sent(&mut self, bytes: usize) {
        if let Some(line) = &mut self.line {
            line.bytes += bytes as u64;
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(mut line) = self.line.take() {
            line.seconds = self.started.elapsed().as_secs_f64();
            line.at = SystemTime::now();
            // The writer is gone only if it failed, which it has logged.
            let _ = self.lines.send(line);
        }
    }
}

/// What a log line says.
struct Line {
    client: IpAddr,
    at: SystemTime,
    method: Method,
    target: Option<PathAndQuery>,
    version: Version,
    referer: Option<HeaderValue>,
    agent: Option<HeaderValue>,
    app: Arc<str>,
    request_id: Option<HeaderValue>,
    status: u16,
    bytes: u64,
    seconds: f64,
}

impl Line {
    fn write(&self, out: &mut impl Write, clock: &mut FormattedSecond) -> std::io::Result<()> {
        write!(out, "{} - - [{}] \"", self.client, clock.format(self.at))?;
        escape_into(out, self.method.as_str().as_bytes())?;
        out.write_all(b" ")?;
        let target = self.target.as_ref().map_or("/", PathAndQuery::as_str);
        escape_into(out, target.as_bytes())?;
        write!(
            out,
            " {:?}\" {} {} \"",
            self.version, self.status, self.bytes
        )?;
        escape_into(out, self.referer.as_ref().map_or(b"-", |v| v.as_bytes()))?;
        out.write_all(b"\" \"")?;
        escape_into(out, self.agent.as_ref().map_or(b"-", |v| v.as_bytes()))?;
        write!(out, "\" {:.3} {} ", self.seconds, self.app)?;
        match &self.request_id {
            // Kept only if it is visible ASCII (`forwarded`), so no escaping.
            Some(id) => out.write_all(id.as_bytes())?,
            None => out.write_all(b"-")?,
        }
        out.write_all(b"\n")
    }
}

/// The last second formatted, since a busy log writes many lines in each.
#[derive(Default)]
struct FormattedSecond {
    second: u64,
    text: String,
}

impl FormattedSecond {
    fn format(&mut self, at: SystemTime) -> &str {
        let second = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.text.is_empty() || second != self.second {
            self.second = second;
            self.text = clf_time(at);
        }
        &self.text
    }
}

/// Writes text as nginx logs it: `"`, `\` and bytes outside printable
/// ASCII as `\xHH`, so a client cannot forge fields or lines.
fn escape_into(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let mut rest = bytes;
    while let Some(at) = rest
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte))
    {
        out.write_all(&rest[..at])?;
        write!(out, "\\x{:02X}", rest[at])?;
        rest = &rest[at + 1..];
    }
    out.write_all(rest)
}

/// `25/Nov/2026:03:14:20 +0000`: the log's time, in UTC.
fn clf_time(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Year, month (1-12) and day (1-31) of a day counted from 1970-01-01, by
/// Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_in_the_common_log_format() {
        let at = |secs| clf_time(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(at(1_795_576_460), "25/Nov/2026:03:14:20 +0000");
        assert_eq!(at(4_133_980_799), "31/Dec/2100:23:59:59 +0000");
    }

    #[test]
    fn quotes_and_control_bytes_are_escaped() {
        let escape = |bytes: &[u8]| {
            let mut out = Vec::new();
            escape_into(&mut out, bytes).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(escape(b"curl/8.5"), "curl/8.5");
        assert_eq!(escape(b"a\"b\\c\nd\xff"), "a\\x22b\\x5Cc\\x0Ad\\xFF");
    }
}
