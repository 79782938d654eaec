//! The redb tables. Layout chosen for write speed (see docs/design.md, "Table layout"):
//! every table but the two key trees is appended to in key order; those have small
//! fixed-width keys and are written only by merges, in sorted order.

use redb::TableDefinition;

/// `first seq -> chunk` of up to 64 consecutive records (`codec::ChunkBuilder`,
/// each a bincode `codec::Record`). Append-only, in arrival order.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// `(topic_id, first seq) -> packed seqs`: per-topic arrival order, for
/// `GET /events?topic=`. One row per topic per batch (a "run"), not per event.
pub const TOPIC_RUNS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("topic_runs");

/// `(key_hash, seq) -> ()`. The lower, large sorted tree of the dedup index (see
/// `index`). A hash collision simply yields two entries under one hash; lookups
/// compare the exact key against each record.
pub const KEY_INDEX: TableDefinition<(u64, u64), ()> = TableDefinition::new("key_index");

/// `(key_hash, seq) -> ()`. The upper, small sorted tree of the dedup index: the
/// key log is merged into it, and it into `KEY_INDEX` (see `index`).
pub const KEY_INDEX_UPPER: TableDefinition<(u64, u64), ()> = TableDefinition::new("key_index_upper");

/// `first seq of a batch -> packed (key_hash, seq) pairs` of that batch's new keys:
/// the not yet merged part of the dedup index, one append-ordered row per batch.
pub const KEY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("key_log");

/// `topic -> (topic_id, stored_events)`.
pub const TOPICS: TableDefinition<&str, (u32, u64)> = TableDefinition::new("topics");

/// Counters and settings, see the `meta` constants.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub mod meta {
    /// Layout version of this file.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// Seed of `event::KeyHasher`; fixed when the database is created.
    pub const KEY_HASH_SEED: &str = "key_hash_seed";
    /// Next `seq` to assign.
    pub const NEXT_SEQ: &str = "next_seq";
    /// Persisted `unique_processed` (equals the number of stored events).
    pub const UNIQUE: &str = "unique_processed";
    /// Persisted `duplicate_dropped`.
    pub const DUPLICATES: &str = "duplicate_dropped";
    /// The last journal frame applied (`journal`); absent before the first.
    pub const JOURNAL_FRAME: &str = "journal_frame";
}

/// 4: the upper key tree. A version-3 file (no upper tree, a longer key log) is
/// upgraded in place at open.
pub const SCHEMA_VERSION: u64 = 4;
pub const UPGRADABLE_SCHEMA_VERSION: u64 = 3;
