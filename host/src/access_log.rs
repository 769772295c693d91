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
//! thread of their own that writes them in batches: a request never waits
//! on the disk.

use http::Request;
use http::header::{REFERER, USER_AGENT};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Destination {
    #[default]
    Off,
    /// `-`: standard output, where a supervisor (systemd, docker) collects it.
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// `off`, `-` or a path.
    pub fn parse(text: &str) -> Result<Destination, String> {
        match text.trim() {
            "" => Err("give a file, `-` for standard output, or `off`".into()),
            "off" => Ok(Destination::Off),
            "-" => Ok(Destination::Stdout),
            path => Ok(Destination::File(path.into())),
        }
    }
}

/// An open access log.
#[derive(Debug)]
pub struct AccessLog {
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    /// Opens `destination` (appending to a file) and starts its writer;
    /// `None` if it is off.
    pub fn open(destination: &Destination) -> anyhow::Result<Option<AccessLog>> {
        let out: Box<dyn Write + Send> = match destination {
            Destination::Off => return Ok(None),
            Destination::Stdout => Box::new(std::io::stdout()),
            Destination::File(path) => Box::new(open_file(path)?),
        };
        let (lines, received) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("wasmhost-access-log".into())
            .spawn(move || write_lines(out, received))
            .map_err(|e| anyhow::anyhow!("cannot start the access log writer: {e}"))?;
        Ok(Some(AccessLog { lines }))
    }

    /// Starts the record of a request: what it asked, from where, when.
    pub fn begin<B>(&self, request: &Request<B>, client: IpAddr, app: &str) -> Record {
        let mut request_line = String::with_capacity(64);
        let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let _ = write!(
            request_line,
            "{} {target} {:?}",
            request.method(),
            request.version()
        );
        let header = |name| {
            request
                .headers()
                .get(name)
                .map(|value| escape(value.as_bytes()))
        };
        Record {
            lines: self.lines.clone(),
            client,
            started: Instant::now(),
            request_line: escape(request_line.as_bytes()),
            referer: header(REFERER),
            agent: header(USER_AGENT),
            app: app.to_string(),
            status: 0,
            bytes: 0,
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

/// Writes lines as they come; flushes whenever none is waiting, so a quiet
/// server's log is current and a busy one's is written in batches.
fn write_lines(out: Box<dyn Write + Send>, lines: mpsc::Receiver<String>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = lines.recv() {
        let mut result = out.write_all(line.as_bytes());
        while let Ok(line) = lines.try_recv() {
            result = result.and_then(|()| out.write_all(line.as_bytes()));
        }
        if let Err(error) = result.and_then(|()| out.flush()) {
            tracing::error!("cannot write the access log: {error}; access logging stopped");
            return;
        }
    }
}

/// One request's line, written when dropped: after its response is sent.
pub struct Record {
    lines: mpsc::Sender<String>,
    client: IpAddr,
    started: Instant,
    request_line: String,
    referer: Option<String>,
    agent: Option<String>,
    app: String,
    status: u16,
    bytes: u64,
}

impl Record {
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Counts body bytes sent.
    pub fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        let mut line = String::with_capacity(128 + self.request_line.len());
        let _ = writeln!(
            line,
            "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" {seconds:.3} {}",
            self.client,
            clf_time(SystemTime::now()),
            self.request_line,
            self.status,
            self.bytes,
            self.referer.as_deref().unwrap_or("-"),
            self.agent.as_deref().unwrap_or("-"),
            self.app,
        );
        // The writer is gone only if it failed, which it has logged.
        let _ = self.lines.send(line);
    }
}

/// Text as nginx logs it: `"`, `\` and bytes outside printable ASCII as
/// `\xHH`, so a client cannot forge fields or lines.
fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            let _ = write!(text, "\\x{byte:02X}");
        } else {
            text.push(byte as char);
        }
    }
    text
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
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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
    use std::time::Duration;

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
        assert_eq!(escape(b"curl/8.5"), "curl/8.5");
        assert_eq!(escape(b"a\"b\\c\nd\xff"), "a\\x22b\\x5Cc\\x0Ad\\xFF");
    }

    #[test]
    fn destinations_parse() {
        assert_eq!(Destination::parse("off"), Ok(Destination::Off));
        assert_eq!(Destination::parse("-"), Ok(Destination::Stdout));
        assert_eq!(
            Destination::parse("/var/log/wasmhost/access.log"),
            Ok(Destination::File("/var/log/wasmhost/access.log".into()))
        );
        assert!(Destination::parse(" ").is_err());
    }
}
