//! Durable storage on redb, split by operation (after fjall's journal):
//! - `open`: open or create, recover the head and the key-log mirror, reopen
//!   after an I/O error, and the key scans that rebuild the Bloom filter;
//! - `write`: append one batch per write transaction (the writer thread only);
//! - `read`: exact key lookups, pages of events, topics (any thread);
//! - `handle`: the [`Store`] itself and the values the operations exchange;
//! - `schema` (tables), `codec` (record and chunk encodings), `index` (the
//!   key-log mirror and its merges).
//!
//! Each part has its own error. redb is MVCC: reads never block the writer.
//! Promise: when `append` returns `Ok`, the batch's events, index entries and
//! counters are committed together and fsynced; on `Err` the writer reopens the
//! database and reads back which of the two happened.

pub mod codec;
mod handle;
pub mod index;
mod open;
mod read;
pub mod schema;
mod write;

pub use handle::{Head, OpenDatabase, Page, Recovered, Row, Store, StoreConfig, StoredEvent};
pub use open::OpenError;
pub use read::ReadError;
pub use write::WriteError;

#[cfg(test)]
mod tests;
