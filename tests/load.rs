//! Load for the tests that change something under traffic (a reload, a
//! restart, a `wasmhost dev` edit, nginx failing over): threads sending
//! requests without pause until the test stops them, each reply judged, and
//! every failure kept with when it happened.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// How one request went: `Ok` if it was what the test wanted, else why not.
pub type Judged = Result<(), String>;

/// Threads sending requests until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<(Instant, String)>>>,
    threads: Vec<JoinHandle<()>>,
}

/// What a load did once stopped.
#[derive(Debug)]
pub struct Tally {
    /// Requests judged good.
    pub served: usize,
    /// The others: when, and why.
    pub failures: Vec<(Instant, String)>,
}

impl Tally {
    /// Requests sent, good or not.
    pub fn sent(&self) -> usize {
        self.served + self.failures.len()
    }

    /// Asserts that nothing failed and that at least `at_least` requests
    /// were served, enough for the load to have meant something.
    pub fn assert_clean(&self, at_least: usize) {
        assert!(
            self.failures.is_empty(),
            "{} of {} failed or were not what was wanted: {:?}",
            self.failures.len(),
            self.sent(),
            self.failures
        );
        assert!(
            self.served >= at_least,
            "the load was too light to mean anything: {} served",
            self.served
        );
    }
}

impl Load {
    /// `threads` threads, each with its own keep-alive client, calling
    /// `request(client, n, thread)` for its `n`th request until stopped.
    pub fn start<F>(threads: usize, request: F) -> Load
    where
        F: Fn(&ureq::Agent, usize, usize) -> Judged + Send + Sync + 'static,
    {
        let request = Arc::new(request);
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|thread| {
                let (request, stop) = (request.clone(), stop.clone());
                let (served, failures) = (served.clone(), failures.clone());
                std::thread::spawn(move || {
                    let agent = crate::client();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match request(&agent, n, thread) {
                            Ok(()) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(why) => failures.lock().unwrap().push((Instant::now(), why)),
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            served,
            failures,
            threads,
        }
    }

    /// `threads` threads GETting `url`; a 200 is good.
    pub fn get(url: &str, threads: usize) -> Load {
        let url = url.to_string();
        Load::start(threads, move |agent, _, _| {
            expect(agent.get(&url).call(), |status, _| status == 200)
        })
    }

    /// Requests judged good so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops the threads and says what they did.
    pub fn finish(mut self) -> Tally {
        self.stop();
        Tally {
            served: self.served(),
            failures: std::mem::take(&mut *self.failures.lock().unwrap()),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("a load thread panicked");
        }
    }
}

impl Drop for Load {
    /// A test that fails before `finish` does not leave threads sending.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Judges a reply read whole: good if `wanted(status, body)`, else the
/// status and body (or the error) as the reason.
pub fn expect(
    reply: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    wanted: impl Fn(u16, &str) -> bool,
) -> Judged {
    let mut reply = reply.map_err(|e| e.to_string())?;
    let status = reply.status().as_u16();
    let body = reply
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if wanted(status, &body) {
        Ok(())
    } else {
        Err(format!("{status}: {body}"))
    }
}
