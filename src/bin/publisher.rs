//! The `publisher` load simulator: see `event_aggregator::publisher`.
//! Exits 0 when the self-check passes, 1 on a mismatch, 2 when it cannot run.

use clap::Parser;
use event_aggregator::publisher::{self, Args};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let json = args.json;
    match publisher::run(args).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                report.print_human();
            }
            if report.self_check.ok {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("publisher: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
