//! The units settings are written in, as the command line and
//! `wasmhost.toml` both write them: sizes (`64MiB`), durations (`30s`),
//! networks (`10.0.0.0/8`), log destinations (`off`, `-`, a path), and the
//! environment variables (`NAME=value`) and directories (`HOST:GUEST:rw`)
//! granted to guests. Each parser's error says what a good value looks like.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Parses `64MiB`, `1GiB`, `512KiB` or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (text, number, unit) = number_and_unit(text);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 64MiB or 1GiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses `250ms`, `30s`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (text, number, unit) = number_and_unit(text);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 500ms, 30s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "" | "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("unknown unit `{unit}` in `{text}`; use ms, s or m")),
    }
}

/// A duration that must not be zero: a limit of nothing serves nothing.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        duration if duration.is_zero() => Err("must be more than 0".into()),
        duration => Ok(duration),
    }
}

/// `text` trimmed, then split where its leading digits end.
fn number_and_unit(text: &str) -> (&str, &str, &str) {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    (text, number, unit)
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address (one host).
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("`{text}` is not an address or CIDR; write e.g. 127.0.0.1 or 10.0.0.0/8")
        })
}

/// Parses the admin listener's address: `PORT` (on 127.0.0.1: the admin
/// listener is for this machine unless told otherwise) or `IP:PORT`.
pub fn parse_admin(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("`{text}` is not PORT or IP:PORT; write e.g. 9090 or 127.0.0.1:9090"))
}

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

/// An environment variable's name as a guest may be given it: not empty,
/// no `=` and no NUL (the name could not be read back otherwise).
pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(format!(
            "`{name}` is not an environment variable name (not empty, no `=`); write e.g. DATABASE_URL"
        ));
    }
    Ok(())
}

/// `--env NAME=VALUE`.
pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "`{text}` is not NAME=VALUE; write e.g. --env DATABASE_URL=postgres://db/app"
        ));
    };
    check_env_name(name)?;
    check_env_value(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

/// A value a guest may be given: anything but a NUL byte, which would end
/// it early.
pub fn check_env_value(name: &str, value: &str) -> Result<(), String> {
    match value.contains('\0') {
        true => Err(format!("the value of {name} contains a NUL byte")),
        false => Ok(()),
    }
}

/// `--inherit-env NAME`.
pub fn parse_env_name(text: &str) -> Result<String, String> {
    check_env_name(text).map(|()| text.to_string())
}

/// The value of wasmhost's own `name`, for an app that inherits it; unset
/// is `None`, with a warning naming it and `place` (an unset variable is
/// often intended: one machine sets it, another does not).
pub fn inherit_env(name: &str, place: &str) -> Result<Option<String>, String> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => {
            tracing::warn!(
                "{place}: {name} is not set in wasmhost's environment; the guest does not get it"
            );
            Ok(None)
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "{place}: {name} in wasmhost's environment is not valid UTF-8; a guest can only be given text"
        )),
    }
}

/// `HOST[:GUEST][:rw]` (`--dir`, and the entries of `dirs`): the host
/// directory as written, where the guest sees it (the host path itself if
/// not given), and whether it may write there (`:ro`, the default, may be
/// written out).
pub fn parse_dir(text: &str) -> Result<(String, String, bool), String> {
    let (rest, writable) = match text.rsplit_once(':') {
        Some((rest, "rw")) => (rest, true),
        Some((rest, "ro")) => (rest, false),
        _ => (text, false),
    };
    let (host, guest) = match rest.split_once(':') {
        Some((host, guest)) => (host, guest),
        None => (rest, rest),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!(
            "`{text}` is not HOST[:GUEST][:rw]; write e.g. static:/static or data:/data:rw"
        ));
    }
    Ok((host.to_string(), guest.to_string(), writable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        for (text, bytes) in [
            ("512", 512),
            ("64KiB", 64 << 10),
            ("64MiB", 64 << 20),
            ("64M", 64 << 20),
            ("2GiB", 2 << 30),
            (" 1 GiB ", 1 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for text in ["", "MiB", "12XB", "-1MiB", "99999999999999999999GiB"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        let cases = [
            ("250ms", Some(Duration::from_millis(250))),
            ("30s", Some(Duration::from_secs(30))),
            ("30", Some(Duration::from_secs(30))),
            ("2m", Some(Duration::from_secs(120))),
            ("", None),
            ("s", None),
            ("5h", None),
            ("-1s", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).ok(), expected, "{text:?}");
        }
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn networks_parse_as_cidr_or_single_addresses() {
        assert_eq!(
            parse_network("127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("localhost").is_err());
        assert!(parse_network("10.0.0.0/33").is_err());
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
