//! Log lines a client can trigger, bounded: each kind (one call site of
//! [`limited!`]) writes at most [`BURST`] lines per [`WINDOW`], and the
//! first line of the next window says how many were left out; text a
//! client or a guest chose is [`clip`]ped. Otherwise a client asking for a
//! faulting path in a loop decides how fast the log grows.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Lines of one kind written per window.
pub const BURST: u32 = 10;

/// Bytes of client- or guest-chosen text a line carries.
pub const CLIP: usize = 256;

/// The count of one kind of line in the current window.
pub struct Rate {
    /// The window the counts are for, as a number since the process began.
    window: AtomicU64,
    written: AtomicU32,
    left_out: AtomicU32,
}

impl Rate {
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            written: AtomicU32::new(0),
            left_out: AtomicU32::new(0),
        }
    }

    /// `Some(n)` if this line is to be written, `n` being how many of its
    /// kind were left out in the windows since the last one written.
    pub fn admit(&self) -> Option<u32> {
        self.admit_at(window_now())
    }

    fn admit_at(&self, now: u64) -> Option<u32> {
        let seen = self.window.load(Ordering::Relaxed);
        if now != seen
            && self
                .window
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.written.store(0, Ordering::Relaxed);
        }
        if self.written.fetch_add(1, Ordering::Relaxed) < BURST {
            Some(self.left_out.swap(0, Ordering::Relaxed))
        } else {
            self.left_out.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for Rate {
    fn default() -> Self {
        Self::new()
    }
}

fn window_now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    // Window 0 is "never"; the first real one is 1.
    (start.elapsed().as_secs() / WINDOW.as_secs()) + 1
}

/// `text` cut to at most [`CLIP`] bytes, on a character boundary, marked
/// with `…` where it was cut.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= CLIP {
        return text.into();
    }
    let mut end = CLIP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// `tracing`'s macro of the given level, at most `BURST` times per
/// `WINDOW` for this call site: `limited!(warn, app = %route, "…")`.
#[macro_export]
macro_rules! limited {
    ($level:ident, $($arg:tt)+) => {{
        static RATE: $crate::telemetry::log_rate::Rate = $crate::telemetry::log_rate::Rate::new();
        if let Some(left_out) = RATE.admit() {
            if left_out > 0 {
                tracing::$level!("… {left_out} more lines like the next were left out");
            }
            tracing::$level!($($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_written_the_rest_counted_and_told_in_the_next_window() {
        let rate = Rate::new();
        let written = (0..BURST + 5).filter_map(|_| rate.admit_at(7)).count();
        assert_eq!(written, BURST as usize);
        assert_eq!(rate.admit_at(8), Some(5));
        assert_eq!(rate.admit_at(8), Some(0));
    }

    #[test]
    fn long_text_is_clipped_on_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(CLIP);
        let clipped = clip(&long);
        assert!(clipped.len() <= CLIP + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
    }
}
