//! Key-value buckets kept in Redis: one pool of connections per granted
//! bucket, shared by all the app's instances. Each new connection is
//! checked against the app's egress rule for internal addresses, as a
//! guest's own TCP connection would be: the host is resolved here and the
//! address connected to is the one checked, so a name that resolves to
//! an internal address later (DNS rebinding) is refused then too.
//!
//! Keys are stored as the guest gives them, in the database the URL names:
//! apps given the same URL share their keys, as they were meant to.

use crate::config::RedisTarget;
use crate::config::outbound::{Host, Scheme};
use crate::grants::egress::{Egress, is_internal};
use crate::grants::store::{KEYS_PER_PAGE, Step, Store, StoreError};
use deadpool::managed::{self, Metrics, Pool, RecycleError, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Connections one bucket keeps to its Redis: each carries one operation
/// at a time, and sixteen keep up with a two-core server's requests.
const POOL_SIZE: usize = 16;
/// Time to connect (and resolve the host); a Redis that is down answers
/// its guests' operations with an error within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one operation may wait for its reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time an operation waits for a free connection of the pool.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets KEYS[1] to ARGV[1] if it holds ARGV[3] (ARGV[2] = "1") or is
/// absent (ARGV[2] = "0"); 1 if it did.
const SWAP_IF: &str = "local v = redis.call('GET', KEYS[1]) \
    if (ARGV[2] == '1' and v == ARGV[3]) or (ARGV[2] == '0' and v == false) then \
    redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0";

pub struct RedisStore {
    /// `redis://host:port/db` of the app's bucket, without its password.
    shown: String,
    pool: Pool<Connector>,
}

impl RedisStore {
    /// Connects lazily: the first operation opens the first connection, so
    /// an app loads while its Redis is still starting.
    pub fn new(route: &str, bucket: &str, target: &RedisTarget, egress: Arc<Egress>) -> Self {
        let connector = Connector {
            target: target.clone(),
            egress,
            place: format!("[{route}] keyvalue bucket {bucket}"),
        };
        let pool = Pool::builder(connector)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and its timeouts builds");
        Self {
            shown: target.to_string(),
            pool,
        }
    }

    /// Runs `command` on a pooled connection, reading its reply as `T`; a
    /// connection that failed is dropped rather than given back.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let mut link = self.pool.get().await.map_err(|e| {
            StoreError::Other(match e {
                managed::PoolError::Backend(e) => e,
                managed::PoolError::Timeout(_) => {
                    format!("{}: no connection free in time", self.shown)
                }
                e => format!("{}: {e}", self.shown),
            })
        })?;
        match command.query_async(&mut link.connection).await {
            Ok(reply) => Ok(reply),
            Err(error) => {
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    link.broken = true;
                }
                Err(StoreError::Other(format!("{}: {error}", self.shown)))
            }
        }
    }
}

/// A pooled connection, and whether it failed (then the pool drops it).
pub struct Link {
    connection: MultiplexedConnection,
    broken: bool,
}

/// Opens the pool's connections, each to an address the app may reach.
pub struct Connector {
    target: RedisTarget,
    egress: Arc<Egress>,
    /// Names the app and bucket in errors and logs.
    place: String,
}

impl Connector {
    /// The host's addresses that the egress rule lets this app reach: an
    /// internal one only if the URL names it, or a grant of the app does.
    async fn addresses(&self) -> Result<Vec<IpAddr>, String> {
        let port = self.target.port;
        if let Ok(ip) = self.target.host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let found = tokio::net::lookup_host((self.target.host.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.target.host))?;
        let (allowed, refused): (Vec<IpAddr>, Vec<IpAddr>) = found
            .map(|addr| addr.ip())
            .partition(|ip| !is_internal(*ip) || self.egress.names(Scheme::Tcp, *ip, port));
        if allowed.is_empty() {
            if let Some(ip) = refused.first() {
                let host = Host::Name(&self.target.host);
                self.egress.refuse_internal(Scheme::Tcp, host, *ip, port);
                return Err(format!(
                    "{} resolves to {ip}, an internal address; write the address in the URL, or grant it with allowed_outbound_hosts = [\"tcp://{ip}:{port}\"]",
                    self.target.host
                ));
            }
            return Err(format!("{} has no address", self.target.host));
        }
        Ok(allowed)
    }

    async fn connect(&self) -> Result<Link, String> {
        let settings = {
            let mut settings = RedisConnectionInfo::default().set_db(self.target.db);
            if let Some(user) = &self.target.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &self.target.password {
                settings = settings.set_password(password);
            }
            settings
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut last = String::new();
        for ip in self.addresses().await? {
            let info = ConnectionAddr::Tcp(ip.to_string(), self.target.port)
                .into_connection_info()
                .map_err(|e| e.to_string())?
                .set_redis_settings(settings.clone());
            let client = Client::open(info).map_err(|e| e.to_string())?;
            match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(connection) => {
                    return Ok(Link {
                        connection,
                        broken: false,
                    });
                }
                Err(error) => last = format!("{ip}: {error}"),
            }
        }
        Err(last)
    }
}

impl managed::Manager for Connector {
    type Type = Link;
    type Error = String;

    async fn create(&self) -> Result<Link, String> {
        self.connect().await.map_err(|error| {
            let line = format!("{}: cannot connect to {}: {error}", self.place, self.target);
            crate::limited!(warn, "{line}");
            line
        })
    }

    /// Gives back a connection whose last operation did not fail; no PING,
    /// which would cost every operation a second round trip.
    async fn recycle(&self, link: &mut Link, _: &Metrics) -> RecycleResult<String> {
        if link.broken {
            return Err(RecycleError::message("the connection failed"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(drop)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    /// Redis's SCAN cursor is the interface's cursor: 0 starts, and a
    /// reply of 0 means the end.
    async fn list_keys(&self, cursor: u64) -> Result<(Vec<String>, Option<u64>), StoreError> {
        let (next, keys): (u64, Vec<String>) = self
            .query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(KEYS_PER_PAGE),
            )
            .await?;
        Ok((keys, (next != 0).then_some(next)))
    }

    async fn increment(&self, key: &str, step: Step) -> Result<i128, StoreError> {
        let delta = match step {
            Step::Signed(delta) => delta,
            Step::Unsigned(delta) => i64::try_from(delta)
                .map_err(|_| StoreError::Other("Redis increments by at most 2^63-1".into()))?,
        };
        let value: i64 = self.query(redis::cmd("INCRBY").arg(key).arg(delta)).await?;
        match step {
            Step::Unsigned(_) if value < 0 => Err(StoreError::Other(format!(
                "the counter is negative ({value}); this interface's counters are unsigned"
            ))),
            _ => Ok(i128::from(value)),
        }
    }

    /// One script, so that the compare and the set are one step for Redis.
    async fn swap_if(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let mut command = redis::cmd("EVAL");
        command.arg(SWAP_IF).arg(1).arg(key).arg(value);
        match expected {
            Some(expected) => command.arg("1").arg(expected),
            None => command.arg("0").arg(""),
        };
        let swapped: i64 = self.query(&command).await?;
        Ok(swapped == 1)
    }

    async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query(redis::cmd("MGET").arg(keys)).await
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut command = redis::cmd("MSET");
        for (key, value) in pairs {
            command.arg(key).arg(value);
        }
        self.query(&command).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query::<i64>(redis::cmd("DEL").arg(keys))
            .await
            .map(drop)
    }
}
