//! `wasi:keyvalue@0.2.0-draft`, the version `wasmtime serve -S keyvalue`
//! links (wasmtime-wasi-keyvalue 48): its bindings, and each call handed
//! to the app's buckets.

use crate::grants::keyvalue::Bucket;
use crate::grants::store::{Step, StoreError};
use crate::guest::keyvalue::view::{HasKeyValue, KeyValue};
use anyhow::Result;
use wasmtime::component::{Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/deps/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::grants::keyvalue::Bucket,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

alike_in_both_versions!();

impl store::HostBucket for KeyValue<'_> {
    bucket_methods_alike_in_both_versions!();

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Answer<store::KeyResponse> {
        let bucket = self.bucket(&bucket)?;
        let listed = bucket
            .run("list-keys", bucket.store().list_keys(cursor.unwrap_or(0)))
            .await;
        Ok(listed
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(to_guest))
    }
}

impl atomics::Host for KeyValue<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Answer<u64> {
        let bucket = self.bucket(&bucket)?;
        let sum = bucket
            .run(
                "increment",
                bucket.store().increment(&key, Step::Unsigned(delta)),
            )
            .await;
        // In range: the step keeps the counter a u64.
        Ok(sum.map(|sum| sum as u64).map_err(to_guest))
    }
}
