//! The `normshift` command line. Library errors are typed; here they become one line on stderr and an exit code:
//! 0 success, 1 verification found a difference, 2 bad input or usage, 3 no runtime could run a model.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Like every Unix filter: when the reader of our output goes away (`normshift dump M | head`), stop quietly
    // instead of failing on the next write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Ctrl-C or SIGTERM while a file is being written: remove what is unfinished, so that the output is either
    // complete or absent, then stop as an interrupted program does (128 + SIGINT).
    let installed = ctrlc::set_handler(|| {
        let _no_more_writes = normshift::io::unfinished::abandon();
        eprintln!("normshift: interrupted; unfinished files removed");
        std::process::exit(130);
    });
    if let Err(e) = installed {
        eprintln!("normshift: cannot install the interrupt handler: {e}");
        return ExitCode::from(2);
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("normshift: {}", cli::one_line(&e));
            ExitCode::from(cli::exit_code_for(&e))
        }
    }
}
