//! The grants of `wasi:config` and `wasi:keyvalue`, as data: an app's
//! config variables (whose values are never shown: one may be a password)
//! and the key-value buckets it may open, each backed by a store in
//! wasmhost's memory or in Redis.

use std::collections::BTreeMap;
use std::fmt;

/// An app's `wasi:config/store` variables. Its `Debug` names the keys and
/// hides the values, so no log line or error carries a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConfigVars(BTreeMap<String, String>);

impl ConfigVars {
    /// Sets `key`, replacing an earlier value.
    pub fn set(&mut self, key: String, value: String) {
        self.0.insert(key, value);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ConfigVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Checks a config key: `wasi:config` keys are plain names, so a typo
/// such as a space or an `=` is caught when the file is read.
pub fn check_config_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a config key cannot be empty".into());
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "config key {key:?} has {bad:?}; use letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// `--config-var KEY=VALUE`.
pub fn parse_config_var(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} has no '='; write KEY=VALUE"))?;
    check_config_key(key)?;
    Ok((key.to_string(), value.to_string()))
}

/// The name a guest opens its default bucket by; `wasmtime serve` opens
/// it as `""`, Spin as `"default"`, and both reach this one.
pub const DEFAULT_BUCKET: &str = "default";

/// Where one bucket's keys are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreTarget {
    /// In wasmhost's memory: the app's own (`"memory"`), or one shared by
    /// every app given the same name (`"memory:NAME"`).
    Memory { shared: Option<String> },
    /// A Redis database, `redis://[user:password@]host[:port][/db]`.
    Redis(RedisTarget),
}

/// A Redis database as the grant gives it. Its `Debug` and `Display`
/// leave the password out.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "redis://{host}:{}/{}", self.port, self.db)
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Memory { shared: None } => f.write_str("memory"),
            StoreTarget::Memory { shared: Some(name) } => write!(f, "memory:{name}"),
            StoreTarget::Redis(redis) => redis.fmt(f),
        }
    }
}

/// A store as written in a grant: `memory`, `memory:NAME` or a `redis://`
/// URL.
pub fn parse_store(text: &str) -> Result<StoreTarget, String> {
    if text == "memory" {
        return Ok(StoreTarget::Memory { shared: None });
    }
    if let Some(name) = text.strip_prefix("memory:") {
        check_bucket_name(name).map_err(|e| format!("{text}: {e}"))?;
        return Ok(StoreTarget::Memory {
            shared: Some(name.to_string()),
        });
    }
    if text.starts_with("rediss://") {
        return Err(format!(
            "{text}: TLS to Redis is not supported yet; use redis:// on a trusted network, or a local TLS tunnel"
        ));
    }
    if text.starts_with("redis://") {
        return parse_redis(text).map(StoreTarget::Redis);
    }
    Err(format!(
        "{text:?} is not a store; write \"memory\", \"memory:NAME\" (shared by the apps given NAME) or \"redis://HOST:PORT/DB\""
    ))
}

fn parse_redis(text: &str) -> Result<RedisTarget, String> {
    let url = http::Uri::try_from(text).map_err(|e| format!("{text}: not a URL: {e}"))?;
    let authority = url
        .authority()
        .ok_or_else(|| format!("{text}: no host; write redis://HOST:PORT/DB"))?;
    if url.query().is_some() {
        return Err(format!(
            "{text}: query parameters are not read; remove them"
        ));
    }
    let (username, password) = match authority.as_str().rsplit_once('@') {
        None => (None, None),
        Some((user, _)) => match user.split_once(':') {
            Some((name, password)) => (
                Some(name.to_string()).filter(|n| !n.is_empty()),
                Some(password.to_string()),
            ),
            None => (Some(user.to_string()), None),
        },
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{text}: no host; write redis://HOST:PORT/DB"));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| {
                format!("{text}: database {db:?} is not a number; write redis://HOST:PORT/0")
            })?,
    };
    Ok(RedisTarget {
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(6379),
        db,
        username,
        password,
    })
}

/// Bucket names are what guests open, and what `memory:NAME` shares.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "bucket name {name:?} must be letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

/// `--keyvalue BUCKET=STORE`, or `--keyvalue STORE` for the default bucket.
pub fn parse_bucket_flag(text: &str) -> Result<(String, StoreTarget), String> {
    match text.split_once('=') {
        Some((bucket, store)) if !bucket.contains(':') => {
            check_bucket_name(bucket)?;
            Ok((bucket.to_string(), parse_store(store)?))
        }
        _ => Ok((DEFAULT_BUCKET.to_string(), parse_store(text)?)),
    }
}

/// The buckets an app may open, and the bound of its memory stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValueGrant {
    /// By the name the guest opens, `default` for its default bucket.
    pub buckets: BTreeMap<String, StoreTarget>,
    /// Bytes of keys and values one memory store may hold.
    pub memory_limit: u64,
}

/// Enough for a cache of a few hundred thousand small entries; a store
/// past it refuses writes, it never grows the process without end.
pub const DEFAULT_KEYVALUE_MEMORY_LIMIT: u64 = 64 << 20;

impl Default for KeyValueGrant {
    fn default() -> Self {
        Self {
            buckets: BTreeMap::new(),
            memory_limit: DEFAULT_KEYVALUE_MEMORY_LIMIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_parse_and_a_redis_password_is_never_shown() {
        assert_eq!(
            parse_store("memory").unwrap(),
            StoreTarget::Memory { shared: None }
        );
        assert_eq!(
            parse_store("memory:sessions").unwrap(),
            StoreTarget::Memory {
                shared: Some("sessions".into())
            }
        );
        let StoreTarget::Redis(redis) =
            parse_store("redis://app:s3cret@cache.internal:6380/2").unwrap()
        else {
            panic!("not redis")
        };
        assert_eq!(
            (redis.host.as_str(), redis.port, redis.db),
            ("cache.internal", 6380, 2)
        );
        assert_eq!(redis.username.as_deref(), Some("app"));
        assert_eq!(redis.password.as_deref(), Some("s3cret"));
        assert!(!format!("{redis} {redis:?}").contains("s3cret"));
        let plain = parse_store("redis://127.0.0.1").unwrap();
        assert_eq!(plain.to_string(), "redis://127.0.0.1:6379/0");
        assert!(
            parse_store("postgres://x")
                .unwrap_err()
                .contains("memory:NAME")
        );
        assert!(
            parse_store("redis://h/x")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_store("rediss://h").unwrap_err().contains("TLS"));
    }

    #[test]
    fn bucket_flags_name_the_default_bucket_unless_they_say_one() {
        assert_eq!(
            parse_bucket_flag("memory").unwrap().0,
            DEFAULT_BUCKET.to_string()
        );
        assert_eq!(
            parse_bucket_flag("redis://127.0.0.1:6379/0").unwrap().0,
            DEFAULT_BUCKET
        );
        let (bucket, store) = parse_bucket_flag("cache=memory:shared").unwrap();
        assert_eq!(bucket, "cache");
        assert_eq!(store.to_string(), "memory:shared");
        assert!(parse_bucket_flag("bad name=memory").is_err());
    }

    #[test]
    fn config_values_are_hidden_from_debug() {
        let mut vars = ConfigVars::default();
        vars.set("db_password".into(), "hunter2".into());
        let shown = format!("{vars:?}");
        assert!(shown.contains("db_password") && !shown.contains("hunter2"));
        assert!(parse_config_var("a b=1").is_err());
        assert_eq!(
            parse_config_var("greeting=hi=there").unwrap(),
            ("greeting".into(), "hi=there".into())
        );
    }
}
