//! What a guest's keyvalue calls reach, whichever version of the interface
//! it imports: its instance's table, where its buckets are handles, and
//! its app's `Buckets`.

use crate::grants::keyvalue::{Bucket, Buckets};
use crate::grants::store::StoreError;
use wasmtime::component::{HasData, Resource, ResourceTable};

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

pub struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValue<'a>;
}

impl KeyValue<'_> {
    /// The bucket a guest opens as `name`, as a handle in its table; a
    /// handle more than the instance may hold is an error too.
    pub fn open_bucket(
        &mut self,
        name: &str,
    ) -> wasmtime::Result<Result<Resource<Bucket>, StoreError>> {
        if let Err(error) = self.take_place() {
            return Ok(Err(error));
        }
        match self.buckets.open(name) {
            Ok(bucket) => Ok(Ok(self.table.push(bucket)?)),
            Err(error) => {
                *self.open -= 1;
                Ok(Err(error))
            }
        }
    }

    /// Counts one more handle (a bucket, or a CAS that holds one).
    pub fn take_place(&mut self) -> Result<(), StoreError> {
        if *self.open >= OPEN_PER_INSTANCE {
            return Err(StoreError::Other(format!(
                "this instance holds {OPEN_PER_INSTANCE} keyvalue handles open; drop some first"
            )));
        }
        *self.open += 1;
        Ok(())
    }

    /// Drops a handle the guest held.
    pub fn close<T: 'static>(&mut self, handle: Resource<T>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        *self.open = self.open.saturating_sub(1);
        Ok(())
    }

    /// The bucket behind a handle.
    pub fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Bucket> {
        Ok(self.table.get(bucket)?.clone())
    }
}
