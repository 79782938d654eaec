//! Integration tests: the real server on 127.0.0.1:0 with real data directories,
//! over real HTTP. One test binary (one link) with a module per concern.

mod auth;
mod cli;
mod connections;
mod contract;
mod crash;
mod disk;
mod disk_full;
mod faults;
mod filter_snapshot;
mod helpers;
mod knobs;
mod layout;
mod power;
mod publisher;
mod restart;
mod stress;
