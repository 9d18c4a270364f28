//! The `wagate` binary: parse the command line and hand over to [`wagate::cli`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    wagate::cli::run(wagate::cli::Cli::parse()).await
}
