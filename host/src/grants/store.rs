//! What every key-value store does: the operations of `wasi:keyvalue`
//! 0.2.0-draft's store, atomics and batch interfaces, and how they fail,
//! for `memory_store` and `redis_store` to implement and `keyvalue` to
//! hand a guest's calls to.

/// Why an operation failed, as the guest is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The bucket is not granted: `access-denied` in the interface.
    Denied,
    /// Anything else, said in words (`other` in the interface).
    Other(String),
}

/// Keys listed per call of `list-keys`; a guest pages on with the cursor.
pub const KEYS_PER_PAGE: usize = 1000;

/// A counter's step, and the range its value keeps: 0.2.0-draft's
/// counters are `u64`, 0.2.0-draft2's `s64` (as Redis's are).
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Unsigned(u64),
    Signed(i64),
}

impl Step {
    /// `current` plus the step, if it stays in the step's range.
    pub fn apply(self, current: i128) -> Result<i128, StoreError> {
        let (next, max, min) = match self {
            Step::Unsigned(delta) => (current + i128::from(delta), u64::MAX as i128, 0),
            Step::Signed(delta) => (
                current + i128::from(delta),
                i128::from(i64::MAX),
                i128::from(i64::MIN),
            ),
        };
        if next < min || next > max {
            return Err(StoreError::Other(format!(
                "the counter would leave its range ({min} to {max})"
            )));
        }
        Ok(next)
    }
}

/// One store's operations: those of `wasi:keyvalue`'s store, atomics and
/// batch interfaces (0.2.0-draft and 0.2.0-draft2).
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Up to [`KEYS_PER_PAGE`] keys from `cursor` on, and where to go on
    /// from, if anywhere.
    async fn list_keys(&self, cursor: u64) -> Result<(Vec<String>, Option<u64>), StoreError>;
    /// Adds `step` to the decimal number at `key` (0 if absent); the sum.
    async fn increment(&self, key: &str, step: Step) -> Result<i128, StoreError>;
    /// Sets `key` to `value` if it still holds `expected` (`None`: if it
    /// is still absent); whether it did.
    async fn swap_if(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, StoreError>;
    async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError>;
    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError>;
}

/// The decimal number a counter holds, as `increment` reads it.
pub fn counter_value(bytes: &[u8]) -> Result<i128, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StoreError::Other("the value is not a decimal number to increment".into()))
}
