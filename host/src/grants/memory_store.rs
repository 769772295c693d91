//! Key-value stores in wasmhost's memory: one per granted bucket of an
//! app, or one per name for the apps given `memory:NAME`; shared by all
//! the app's instances, and found again by the next version of the app
//! after a reload. Each is bounded: a write that would take it past its
//! limit is refused with an error value; it never grows the process.

use crate::grants::store::{KEYS_PER_PAGE, Step, Store, StoreError, counter_value};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};

/// What an entry costs beyond its key and value: the tree's node share and
/// the two allocations' headers, roughly; a store of many tiny keys must
/// not hold far more than its limit says.
const ENTRY_OVERHEAD: u64 = 64;

/// The stores alive, by who may reach them; a store lives while an app
/// version holds it, so one that is reloaded finds its keys again.
static STORES: LazyLock<Mutex<HashMap<String, Weak<MemoryStore>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub struct MemoryStore {
    /// Bytes it may hold: an app's own store takes the limit of the app's
    /// latest version, a shared one keeps the first app's.
    limit: AtomicU64,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Ordered, so that `list-keys`' cursor pages through them in order.
    entries: BTreeMap<String, Vec<u8>>,
    /// Keys, values and overhead, in bytes.
    bytes: u64,
}

fn cost(key: &str, value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD
}

impl MemoryStore {
    /// The store of the app at `route`'s bucket `bucket`, or the one called
    /// `shared`; made with `limit` if none is alive.
    pub fn find(route: &str, bucket: &str, shared: Option<&str>, limit: u64) -> Arc<MemoryStore> {
        let name = match shared {
            Some(name) => format!("shared\0{name}"),
            None => format!("app\0{route}\0{bucket}"),
        };
        let mut stores = STORES.lock();
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(store) = stores.get(&name).and_then(Weak::upgrade) {
            if shared.is_none() {
                store.limit.store(limit, Ordering::Relaxed);
            }
            return store;
        }
        let store = Arc::new(MemoryStore {
            limit: AtomicU64::new(limit),
            held: Mutex::new(Held::default()),
        });
        stores.insert(name, Arc::downgrade(&store));
        store
    }

    fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    fn full(&self) -> StoreError {
        StoreError::Other(format!(
            "the keyvalue store is full ({} bytes, its keyvalue_memory_limit); delete keys or raise the limit",
            self.limit()
        ))
    }
}

impl Held {
    /// Puts `value` at `key` if the store stays within `limit`.
    fn put(&mut self, limit: u64, key: &str, value: Vec<u8>) -> bool {
        let old = self.entries.get(key).map_or(0, |old| cost(key, old));
        let new = cost(key, &value);
        let bytes = self.bytes - old + new;
        if new > old && bytes > limit {
            return false;
        }
        self.bytes = bytes;
        match self.entries.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                self.entries.insert(key.to_string(), value);
            }
        }
        true
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= cost(key, &old);
        }
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.held.lock().entries.get(key).cloned())
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        if self.held.lock().put(self.limit(), key, value) {
            Ok(())
        } else {
            Err(self.full())
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.held.lock().remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.held.lock().entries.contains_key(key))
    }

    async fn list_keys(&self, cursor: u64) -> Result<(Vec<String>, Option<u64>), StoreError> {
        let held = self.held.lock();
        let from = usize::try_from(cursor).unwrap_or(usize::MAX);
        let keys: Vec<String> = held
            .entries
            .keys()
            .skip(from)
            .take(KEYS_PER_PAGE)
            .cloned()
            .collect();
        let next = from.saturating_add(keys.len());
        let more = next < held.entries.len();
        Ok((keys, more.then_some(next as u64)))
    }

    async fn increment(&self, key: &str, step: Step) -> Result<i128, StoreError> {
        let mut held = self.held.lock();
        let current = match held.entries.get(key) {
            Some(value) => counter_value(value)?,
            None => 0,
        };
        let next = step.apply(current)?;
        if held.put(self.limit(), key, next.to_string().into_bytes()) {
            Ok(next)
        } else {
            Err(self.full())
        }
    }

    async fn swap_if(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let mut held = self.held.lock();
        if held.entries.get(key) != expected.as_ref() {
            return Ok(false);
        }
        if held.put(self.limit(), key, value) {
            Ok(true)
        } else {
            Err(self.full())
        }
    }

    async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let held = self.held.lock();
        Ok(keys
            .iter()
            .map(|key| held.entries.get(key).cloned())
            .collect())
    }

    async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let mut held = self.held.lock();
        // All or nothing: a batch that does not fit changes no key.
        let after = pairs.iter().fold(held.bytes, |bytes, (key, value)| {
            let old = held.entries.get(key).map_or(0, |old| cost(key, old));
            bytes.saturating_sub(old) + cost(key, value)
        });
        if after > self.limit() && after > held.bytes {
            return Err(self.full());
        }
        for (key, value) in pairs {
            // Within the limit by the check above, bar duplicate keys in
            // the batch, which only make it smaller.
            let limit = u64::MAX;
            held.put(limit, &key, value);
        }
        Ok(())
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let mut held = self.held.lock();
        for key in keys {
            held.remove(&key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_store_refuses_writes_past_its_limit_and_takes_them_again_after_deletes() {
        let store = MemoryStore::find("/t-limit", "default", None, 1000);
        run(async {
            let mut written = 0;
            while store
                .set(&format!("k{written}"), vec![0; 100])
                .await
                .is_ok()
            {
                written += 1;
            }
            assert!(written > 0 && written < 10, "{written} writes fit");
            let err = store.set("one-more", vec![0; 100]).await.unwrap_err();
            assert!(matches!(err, StoreError::Other(ref m) if m.contains("keyvalue_memory_limit")));
            // Overwriting with a value no larger always fits.
            store.set("k0", vec![1; 50]).await.unwrap();
            store.delete("k1").await.unwrap();
            store.set("one-more", vec![0; 100]).await.unwrap();
            assert!(store.held.lock().bytes <= 1000);
        });
    }

    #[test]
    fn stores_are_found_again_by_route_and_shared_only_by_name() {
        let one = MemoryStore::find("/t-a", "default", None, 1 << 20);
        let again = MemoryStore::find("/t-a", "default", None, 1 << 20);
        let other_app = MemoryStore::find("/t-b", "default", None, 1 << 20);
        assert!(Arc::ptr_eq(&one, &again));
        assert!(!Arc::ptr_eq(&one, &other_app));
        // A reload's new limit is the app's store's limit from then on.
        MemoryStore::find("/t-a", "default", None, 4096);
        assert_eq!(one.limit(), 4096);
        let shared_a = MemoryStore::find("/t-a", "cache", Some("common"), 1 << 20);
        let shared_b = MemoryStore::find("/t-b", "sessions", Some("common"), 1 << 20);
        assert!(Arc::ptr_eq(&shared_a, &shared_b));
    }

    #[test]
    fn counters_are_decimal_text_and_lists_page_in_order() {
        let store = MemoryStore::find("/t-count", "default", None, 1 << 20);
        run(async {
            assert_eq!(store.increment("hits", Step::Unsigned(2)).await.unwrap(), 2);
            assert_eq!(store.increment("hits", Step::Signed(3)).await.unwrap(), 5);
            assert_eq!(store.get("hits").await.unwrap().unwrap(), b"5");
            assert!(
                store
                    .increment("hits", Step::Unsigned(u64::MAX))
                    .await
                    .is_err()
            );
            assert_eq!(store.increment("hits", Step::Signed(-7)).await.unwrap(), -2);
            store.set("text", b"abc".to_vec()).await.unwrap();
            assert!(store.increment("text", Step::Signed(1)).await.is_err());
            assert!(!store.swap_if("text", None, b"x".to_vec()).await.unwrap());
            assert!(
                store
                    .swap_if("text", Some(b"abc".to_vec()), b"x".to_vec())
                    .await
                    .unwrap()
            );
            assert!(store.swap_if("new", None, b"y".to_vec()).await.unwrap());
            assert_eq!(store.get("text").await.unwrap().unwrap(), b"x");
            for n in 0..KEYS_PER_PAGE + 5 {
                store.set(&format!("page{n:05}"), vec![]).await.unwrap();
            }
            let (first, cursor) = store.list_keys(0).await.unwrap();
            assert_eq!(first.len(), KEYS_PER_PAGE);
            let (rest, end) = store.list_keys(cursor.unwrap()).await.unwrap();
            assert_eq!(first.len() + rest.len(), KEYS_PER_PAGE + 5 + 3);
            assert_eq!(end, None);
        });
    }
}
