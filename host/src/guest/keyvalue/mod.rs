//! `wasi:keyvalue` for guests, in the two versions toolchains emit:
//! 0.2.0-draft (`draft`), which `wasmtime serve -S keyvalue` links, and
//! 0.2.0-draft2 (`draft2`), the interface's latest, with compare-and-swap
//! and signed counters. Both reach the same buckets through one `view`: a
//! bucket is a handle in the instance's table, each call goes to the app's
//! `Buckets`, and one the app was not granted is `access-denied`, a value,
//! never a trap.

/// What both versions do alike, in terms of the version's own generated
/// `store` and `batch` modules (so each gets its own error type): linking,
/// the error a guest sees, `open`, and the batch interface.
macro_rules! alike_in_both_versions {
    () => {
        /// Links this version's store, atomics and batch interfaces.
        pub fn add_to_linker<T: Send + 'static>(
            linker: &mut Linker<T>,
            view: fn(&mut T) -> KeyValue<'_>,
        ) -> Result<()> {
            store::add_to_linker::<_, HasKeyValue>(linker, view)?;
            atomics::add_to_linker::<_, HasKeyValue>(linker, view)?;
            batch::add_to_linker::<_, HasKeyValue>(linker, view)?;
            Ok(())
        }

        fn to_guest(error: StoreError) -> store::Error {
            match error {
                StoreError::Denied => store::Error::AccessDenied,
                StoreError::Other(text) => store::Error::Other(text),
            }
        }

        type Answer<T> = wasmtime::Result<Result<T, store::Error>>;

        impl store::Host for KeyValue<'_> {
            async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
                Ok(self.open_bucket(&identifier)?.map_err(to_guest))
            }
        }

        impl batch::Host for KeyValue<'_> {
            async fn get_many(
                &mut self,
                bucket: Resource<Bucket>,
                keys: Vec<String>,
            ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
                let bucket = self.bucket(&bucket)?;
                let asked = keys.clone();
                let values = bucket.run("get-many", bucket.store().get_many(keys)).await;
                Ok(values
                    .map(|values| {
                        asked
                            .into_iter()
                            .zip(values)
                            .map(|(key, value)| value.map(|value| (key, value)))
                            .collect()
                    })
                    .map_err(to_guest))
            }

            async fn set_many(
                &mut self,
                bucket: Resource<Bucket>,
                pairs: Vec<(String, Vec<u8>)>,
            ) -> Answer<()> {
                let bucket = self.bucket(&bucket)?;
                let set = bucket.run("set-many", bucket.store().set_many(pairs)).await;
                Ok(set.map_err(to_guest))
            }

            async fn delete_many(
                &mut self,
                bucket: Resource<Bucket>,
                keys: Vec<String>,
            ) -> Answer<()> {
                let bucket = self.bucket(&bucket)?;
                let deleted = bucket
                    .run("delete-many", bucket.store().delete_many(keys))
                    .await;
                Ok(deleted.map_err(to_guest))
            }
        }
    };
}

/// The bucket methods both versions share, inside each one's
/// `impl store::HostBucket` (which adds its own `list-keys`).
macro_rules! bucket_methods_alike_in_both_versions {
    () => {
        async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
            let bucket = self.bucket(&bucket)?;
            let got = bucket.run("get", bucket.store().get(&key)).await;
            Ok(got.map_err(to_guest))
        }

        async fn set(
            &mut self,
            bucket: Resource<Bucket>,
            key: String,
            value: Vec<u8>,
        ) -> Answer<()> {
            let bucket = self.bucket(&bucket)?;
            let set = bucket.run("set", bucket.store().set(&key, value)).await;
            Ok(set.map_err(to_guest))
        }

        async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<()> {
            let bucket = self.bucket(&bucket)?;
            let deleted = bucket.run("delete", bucket.store().delete(&key)).await;
            Ok(deleted.map_err(to_guest))
        }

        async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<bool> {
            let bucket = self.bucket(&bucket)?;
            let exists = bucket.run("exists", bucket.store().exists(&key)).await;
            Ok(exists.map_err(to_guest))
        }

        async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
            self.close(bucket)
        }
    };
}

mod draft;
mod draft2;
pub mod view;

pub use view::KeyValue;

use anyhow::Result;
use wasmtime::component::Linker;

/// Links both versions' store, atomics and batch interfaces.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValue<'_>,
) -> Result<()> {
    draft::add_to_linker(linker, view)?;
    draft2::add_to_linker(linker, view)
}
