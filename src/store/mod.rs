//! Durable storage on redb, split by operation (after fjall's journal):
//! - `open`: open or create, recover the head and the key-log mirror, reopen
//!   after an I/O error, and the key scans that rebuild the Bloom filter;
//! - `write`: append one batch per write transaction (the writer thread only);
//! - `journal`: the append-only file that makes small batches durable, so
//!   their redb commits skip the fsync; replayed by `open`;
//! - `tail`: the smallest batches, durable by their journal frame and kept
//!   in memory until the writer applies them to redb together (write-behind); every read
//!   joins them to redb's state;
//! - `read`: exact key lookups, pages of events, topics (any thread);
//! - `handle`: the [`Store`] itself and the values the operations exchange;
//! - `schema` (tables), `codec` (record and chunk encodings), `index` (the
//!   key-log mirror and its merges), `runs` (the key index's sorted runs of
//!   blocks).
//!
//! Each part has its own error. redb is MVCC: reads never block the writer.
//! Promise: when `append` returns `Ok`, the batch's events, index entries and
//! counters are durable (its journal frame synced, or its redb commit fsynced)
//! and seen by every read (in the tail, or committed together); on `Err` the writer
//! reopens the database (which replays the journal) and reads back which of the
//! two happened.

pub mod codec;
mod handle;
pub mod index;
mod journal;
mod open;
mod read;
mod runs;
pub mod schema;
mod tail;
mod write;

pub use handle::{
    DEFAULT_JOURNAL_MAX_FRAME_BYTES, Head, OpenDatabase, OpenJournal, Page, Recovered, Row, Store,
    StoreConfig, StoredEvent,
};
pub use open::OpenError;
pub use read::ReadError;
pub use write::WriteError;

#[cfg(test)]
mod tests;
