//! The redb tables. Layout chosen for write speed (see docs/design.md, "Table layout"):
//! every table but the two key runs is appended to in key order; those are
//! written only by merges, a block of ~1,000 sorted pairs per row.

use redb::TableDefinition;

/// `first seq -> chunk` of up to 64 consecutive records (`codec::ChunkBuilder`,
/// each a bincode `codec::Record`). Append-only, in arrival order.
/// The largest value whose leaf (an 8-byte key and a few bytes of header) fits
/// one 16 KiB page. redb gives a value a power-of-two page, so one just past
/// this would take 32 KiB. Run blocks and event chunks are sized to it.
pub const PAGE_VALUE_MAX_BYTES: usize = 16_320;

pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// `(topic_id, first seq) -> packed seqs`: per-topic arrival order, for
/// `GET /events?topic=`. One row per topic per batch (a "run"), not per event.
pub const TOPIC_RUNS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("topic_runs");

/// `first key_hash of the block -> packed sorted (key_hash, seq) pairs`: the
/// lower, large sorted run of the dedup index (see `index` and `runs`). A hash
/// collision simply yields two pairs under one hash; lookups compare the exact
/// key against each record.
pub const KEY_RUN_LOWER: TableDefinition<u64, &[u8]> = TableDefinition::new("key_run_lower");

/// The upper, small sorted run of the dedup index, laid out as `KEY_RUN_LOWER`:
/// the key log is merged into it, and it into `KEY_RUN_LOWER` (see `index`).
pub const KEY_RUN_UPPER: TableDefinition<u64, &[u8]> = TableDefinition::new("key_run_upper");

/// `first seq of a batch -> packed (key_hash, seq) pairs` of that batch's new keys,
/// packed as a run's block (`runs::encode_pairs`): the not yet merged part of the
/// dedup index, one append-ordered row per batch.
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
    /// Pairs in `KEY_RUN_UPPER` and in `KEY_RUN_LOWER`.
    pub const UPPER_PAIRS: &str = "upper_run_pairs";
    pub const LOWER_PAIRS: &str = "lower_run_pairs";
}

/// 5: the key index as sorted runs of blocks. A version-3 file (one key tree)
/// or version-4 file (two key trees) is upgraded in place at open: its trees
/// are rewritten as the runs (`legacy`).
pub const SCHEMA_VERSION: u64 = 5;
pub const UPGRADABLE_SCHEMA_VERSIONS: [u64; 2] = [3, 4];

/// The key trees of versions 3 and 4, read once by the upgrade and deleted (the
/// writer bench also writes `KEY_INDEX`, as the naive one-insert-per-key layout).
pub mod legacy {
    use redb::TableDefinition;

    /// `(key_hash, seq) -> ()`; version 4's lower tree, version 3's only one.
    pub const KEY_INDEX: TableDefinition<(u64, u64), ()> = TableDefinition::new("key_index");
    /// Version 4's upper tree.
    pub const KEY_INDEX_UPPER: TableDefinition<(u64, u64), ()> = TableDefinition::new("key_index_upper");
}
