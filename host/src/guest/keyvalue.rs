//! `wasi:keyvalue` (0.2.0-draft, the version `wasmtime serve -S keyvalue`
//! links) for guests: the bindings, a bucket as a resource in the
//! instance's table, and each call handed to the app's `Buckets`. A bucket
//! the app was not granted is `access-denied`, a value, never a trap.

use crate::grants::keyvalue::{Bucket, Buckets};
use crate::grants::store::StoreError;
use anyhow::Result;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

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

/// Buckets one instance may hold open at once: each is a small handle, but
/// a guest opening them in a loop must not grow its table without end.
const OPEN_PER_INSTANCE: usize = 1024;

/// What a guest's keyvalue calls reach: its instance's table, and its
/// app's buckets.
pub struct KeyValue<'a> {
    pub table: &'a mut ResourceTable,
    pub buckets: &'a Buckets,
    /// Buckets this instance holds open.
    pub open: &'a mut usize,
}

struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValue<'a>;
}

/// Links the store, atomics and batch interfaces.
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

impl KeyValue<'_> {
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Bucket> {
        Ok(self.table.get(bucket)?.clone())
    }
}

impl store::Host for KeyValue<'_> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        if *self.open >= OPEN_PER_INSTANCE {
            return Ok(Err(store::Error::Other(format!(
                "this instance holds {OPEN_PER_INSTANCE} buckets open; drop some first"
            ))));
        }
        match self.buckets.open(&identifier) {
            Ok(bucket) => {
                *self.open += 1;
                Ok(Ok(self.table.push(bucket)?))
            }
            Err(error) => Ok(Err(to_guest(error))),
        }
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
        self.table.delete(bucket)?;
        *self.open = self.open.saturating_sub(1);
        Ok(())
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
        Ok(bucket
            .run("increment", bucket.store().increment(&key, delta))
            .await
            .map_err(to_guest))
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
