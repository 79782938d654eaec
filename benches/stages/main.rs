//! Criterion benchmarks of each stage of the data path, one module per stage.
//! Results read as events/s (`Throughput::Elements`). Run: `cargo bench --bench stages`,
//! or one group: `cargo bench --bench stages -- writer`.

mod codec;
mod decode;
mod dedup;
mod fixtures;
mod rebuild;
mod writer;

criterion::criterion_main!(
    dedup::benches,
    decode::benches,
    codec::benches,
    writer::benches,
    rebuild::benches
);
