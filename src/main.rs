//! The `normshift` command line. Library errors are typed; here they become one line on stderr and an exit code:
//! 0 success, 1 verification found a difference, 2 bad input or usage, 3 tract could not run a model.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("normshift: {:#}", e);
            ExitCode::from(cli::exit_code_for(&e))
        }
    }
}
