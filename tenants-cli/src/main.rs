//! The `tenants` command; see the `tenants_cli` library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tenants_cli::main_with(tenants_cli::Cli::parse())
}
