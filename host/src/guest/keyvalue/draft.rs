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

impl store::HostBucket for KeyValue<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        let bucket = self.bucket(&bucket)?;
        Ok(bucket
            .run("get", bucket.store().get(&key))
            .await
            .map_err(to_guest))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        let bucket = self.bucket(&bucket)?;
        Ok(bucket
            .run("set", bucket.store().set(&key, value))
            .await
            .map_err(to_guest))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<()> {
        let bucket = self.bucket(&bucket)?;
        Ok(bucket
            .run("delete", bucket.store().delete(&key))
            .await
            .map_err(to_guest))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<bool> {
        let bucket = self.bucket(&bucket)?;
        Ok(bucket
            .run("exists", bucket.store().exists(&key))
            .await
            .map_err(to_guest))
    }

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

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.close(bucket)
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
        Ok(bucket
            .run("set-many", bucket.store().set_many(pairs))
            .await
            .map_err(to_guest))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let bucket = self.bucket(&bucket)?;
        Ok(bucket
            .run("delete-many", bucket.store().delete_many(keys))
            .await
            .map_err(to_guest))
    }
}
