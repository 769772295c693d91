//! How many requests of one app may hold an instance at once, and how many
//! more may wait for one. Past both, a request is turned away at once with
//! `503` and `Retry-After` instead of piling up: under overload a client is
//! better served by a quick "try again" than by a queue that only grows.
//!
//! One client address may have at most `max_per_client` requests in the
//! app at once, running or waiting (nginx's `limit_conn`, per app): by
//! default three quarters of its places, so that however one address holds
//! its requests (bodies that never come, responses it never reads) a
//! quarter stays for everybody else. Its requests past that wait, counted
//! in the queue, for one of its own to finish. Addresses are the client's
//! after the trusted proxies' headers; an IPv6 client is its /64, the
//! least a host is given.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    /// One permit per request allowed to run at once.
    running: Arc<Semaphore>,
    concurrency: u32,
    /// Requests waiting for a permit now.
    waiting: AtomicU32,
    /// How many may wait.
    queue: u32,
    /// Each client address's share.
    clients: Arc<Clients>,
    /// Requests that waited because their client had its share.
    pub held_back: AtomicU64,
}

/// The places of one app held by each client address.
struct Clients {
    /// Requests one address may have in the app at once.
    share: usize,
    /// A semaphore of `share` permits per address with a request in the
    /// app; gone when its last one ends.
    by_address: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// A request's place among the app's running ones, held until its guest is
/// done.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _client: ClientPlace,
}

/// One of a client address's requests in the app.
struct ClientPlace {
    /// The address's semaphore, kept here so that its count says who else
    /// holds it.
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    address: IpAddr,
    clients: Arc<Clients>,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut by_address = self.clients.by_address.lock();
        drop(self.permit.take());
        // Held by the map and this place only: no request of the address
        // is in the app or on its way in.
        if Arc::strong_count(&self.semaphore) == 2
            && self.semaphore.available_permits() == self.clients.share
        {
            by_address.remove(&self.address);
        }
    }
}

impl Clients {
    /// The semaphore of `address`'s requests.
    fn of(&self, address: IpAddr) -> Arc<Semaphore> {
        self.by_address
            .lock()
            .entry(address)
            .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
            .clone()
    }
}

/// The address that shares are kept by: an IPv6 client's /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// One address's share when `max_per_client` is not set: three quarters
/// of the places, all of them for an app of fewer than four.
pub fn default_share(concurrency: u32) -> u32 {
    concurrency - concurrency / 4
}

impl Admission {
    pub fn new(concurrency: u32, queue: u32, max_per_client: u32) -> Self {
        Self {
            running: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
            waiting: AtomicU32::new(0),
            queue,
            clients: Arc::new(Clients {
                share: max_per_client.max(1) as usize,
                by_address: Mutex::default(),
            }),
            held_back: AtomicU64::new(0),
        }
    }

    /// Requests holding a place now.
    pub fn running(&self) -> u32 {
        self.concurrency
            .saturating_sub(self.running.available_permits() as u32)
    }

    /// Requests waiting for a place now.
    pub fn queued(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place to run for a request of `client`, waiting for one (or for
    /// one of the client's own requests to end) if the queue has room;
    /// `None` if it has none. `app` names the app in the log.
    pub async fn admit(&self, app: &str, client: IpAddr) -> Option<Admitted> {
        let address = client_key(client);
        let semaphore = self.clients.of(address);
        let mut place = ClientPlace {
            permit: semaphore.clone().try_acquire_owned().ok(),
            semaphore,
            address,
            clients: self.clients.clone(),
        };
        if place.permit.is_some()
            && let Ok(permit) = self.running.clone().try_acquire_owned()
        {
            return Some(Admitted {
                _permit: permit,
                _client: place,
            });
        }
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        if ahead >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        // Counted out again however the wait ends, the request's future
        // dropped by a client that went away included.
        let _waiting = Waiting(&self.waiting);
        if place.permit.is_none() {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(app = %app, "request queued: its client {client} has {} in the app already", self.clients.share);
            place.permit = Some(place.semaphore.clone().acquire_owned().await.ok()?);
        } else {
            tracing::debug!(app = %app, "request queued: all places taken, {ahead} waiting ahead of it");
        }
        let permit = self.running.clone().acquire_owned().await.ok()?;
        Some(Admitted {
            _permit: permit,
            _client: place,
        })
    }

    /// Client addresses with a request in the app now.
    pub fn clients(&self) -> usize {
        self.clients.by_address.lock().len()
    }
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn past_the_running_and_the_waiting_requests_one_is_turned_away() {
        let admission = Arc::new(Admission::new(1, 1, 1));
        let client = ip("127.0.0.1");
        let first = admission.admit("/", client).await.expect("a free place");
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit("/", client).await.is_some() }
        });
        while admission.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(
            admission.admit("/", ip("10.0.0.1")).await.is_none(),
            "the queue is full"
        );
        drop(first);
        assert!(waiter.await.unwrap(), "the waiting request runs next");
        assert_eq!(admission.waiting.load(Ordering::Acquire), 0);
        assert_eq!(admission.clients(), 0, "no address is kept once done");
    }

    #[tokio::test]
    async fn one_address_takes_its_share_and_the_rest_stay_for_others() {
        let admission = Arc::new(Admission::new(4, 10, default_share(4)));
        let hog = ip("2001:db8::1");
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(admission.admit("/", hog).await.expect("within its share"));
        }
        // The same /64 is the same client; it waits for one of its own.
        let waiter = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit("/", ip("2001:db8::2")).await.is_some() }
        });
        while admission.held_back.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let other = admission.admit("/", ip("2001:db8:1::1")).await;
        assert!(
            other.is_some(),
            "another client finds the place kept for it"
        );
        assert!(!waiter.is_finished());
        held.pop();
        assert!(waiter.await.unwrap());
    }

    #[test]
    fn the_default_share_is_three_quarters_and_all_of_a_small_app() {
        assert_eq!(default_share(100), 75);
        assert_eq!(default_share(3), 3);
        assert_eq!(default_share(1), 1);
    }
}
