//! The `wagate` binary: parse the command line and hand over to [`wagate::cli`].

use std::process::ExitCode;

use clap::Parser;

/// jemalloc: the reply plane allocates and frees many small buffers across threads; with
/// glibc's allocator that was about a fifth of the gateway's CPU (ADR 0009).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    wagate::cli::run(wagate::cli::Cli::parse()).await
}
