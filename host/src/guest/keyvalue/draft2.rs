//! `wasi:keyvalue@0.2.0-draft2`, the interface's latest draft (Spin 3's,
//! and what a guest gets from its repository today): the same buckets as
//! `draft`, signed counters, string cursors, and compare-and-swap.

use crate::grants::keyvalue::Bucket;
use crate::grants::store::{Step, StoreError};
use crate::guest::keyvalue::view::{HasKeyValue, KeyValue};
use anyhow::Result;
use wasmtime::component::{Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue-draft2",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::grants::keyvalue::Bucket,
            "wasi:keyvalue/atomics.cas": crate::guest::keyvalue::draft2::Cas,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// A compare-and-swap a guest began: the value it saw, to be swapped only
/// if the key still holds it.
pub struct Cas {
    bucket: Bucket,
    key: String,
    seen: Option<Vec<u8>>,
}

alike_in_both_versions!();

impl store::HostBucket for KeyValue<'_> {
    bucket_methods_alike_in_both_versions!();

    /// The cursor is the stores' number, written out.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Answer<store::KeyResponse> {
        let bucket = self.bucket(&bucket)?;
        let from = match cursor.as_deref().map(str::parse::<u64>) {
            None => 0,
            Some(Ok(from)) => from,
            Some(Err(_)) => {
                return Ok(Err(store::Error::Other(
                    "not a cursor this store gave".into(),
                )));
            }
        };
        let listed = bucket
            .run("list-keys", bucket.store().list_keys(from))
            .await;
        Ok(listed
            .map(|(keys, cursor)| store::KeyResponse {
                keys,
                cursor: cursor.map(|at| at.to_string()),
            })
            .map_err(to_guest))
    }
}

impl atomics::Host for KeyValue<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Answer<i64> {
        let bucket = self.bucket(&bucket)?;
        let sum = bucket
            .run(
                "increment",
                bucket.store().increment(&key, Step::Signed(delta)),
            )
            .await;
        // In range: the step keeps the counter an s64.
        Ok(sum.map(|sum| sum as i64).map_err(to_guest))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas { bucket, key, seen } = self.table.delete(cas)?;
        *self.open = self.open.saturating_sub(1);
        let swapped = bucket
            .run("swap", bucket.store().swap_if(&key, seen, value))
            .await;
        match swapped {
            Ok(true) => Ok(Ok(())),
            Err(error) => Ok(Err(atomics::CasError::StoreError(to_guest(error)))),
            // The interface gives a failed swap a new CAS, of the value now.
            Ok(false) => match self.begin(bucket, key).await? {
                Ok(again) => Ok(Err(atomics::CasError::CasFailed(again))),
                Err(error) => Ok(Err(atomics::CasError::StoreError(error))),
            },
        }
    }
}

impl KeyValue<'_> {
    /// A CAS of `key`'s value now.
    async fn begin(&mut self, bucket: Bucket, key: String) -> Answer<Resource<Cas>> {
        if let Err(error) = self.take_place() {
            return Ok(Err(to_guest(error)));
        }
        let seen = match bucket.run("get", bucket.store().get(&key)).await {
            Ok(seen) => seen,
            Err(error) => {
                *self.open -= 1;
                return Ok(Err(to_guest(error)));
            }
        };
        Ok(Ok(self.table.push(Cas { bucket, key, seen })?))
    }
}

impl atomics::HostCas for KeyValue<'_> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Resource<Cas>> {
        let bucket = self.bucket(&bucket)?;
        self.begin(bucket, key).await
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Answer<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.close(cas)
    }
}
