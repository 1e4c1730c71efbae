//! The `normshift` command line: definitions (clap derive), dispatch, and the one-line error report. Each
//! subcommand lives in its own module. The binary (`src/main.rs`) and the Python package's `normshift` command
//! both run [`main`], so the two are one program.

pub(crate) mod analyze;
mod bench;
pub(crate) mod convert;
mod diff;
mod extract;
pub(crate) mod inspect;
mod progress;
mod run;
pub(crate) mod verify;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::api::ErrorKind;

/// Exit status of success.
pub const EXIT_OK: u8 = 0;
/// Exit status when outputs differ beyond tolerance.
pub const EXIT_MISMATCH: u8 = 1;
/// Exit status for bad input, I/O and usage errors.
pub const EXIT_ERROR: u8 = 2;
/// Exit status when no runtime can load or run a model.
pub const EXIT_RUNTIME: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "normshift",
    version,
    about = "A compiler for ONNX transformer models that understands where their norms sit",
    long_about = "normshift loads an ONNX model into a graph IR, rewrites it with passes, writes ONNX again and \
                  checks the numbers by running both models (tract built in, onnxruntime when installed).\n\n\
                  Start with `normshift inspect MODEL` to see what a model is, `normshift convert IN -o OUT \
                  --passes ...` to rewrite it, and `normshift verify A B` to compare two models' outputs.",
    after_help = "Exit status: 0 success, 1 outputs differ beyond tolerance, 2 bad input or usage, \
                  3 no runtime could run a model."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Summarize a model: IR version, producer, opsets, op histogram, inputs, outputs, parameters.
    Inspect {
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the model's IR in its stable text form (one line per node, constants summarized by hash).
    Dump {
        model: PathBuf,
        /// Append each node's name as a comment.
        #[arg(long)]
        node_names: bool,
    },
    /// Find the norms and residual units and say where each norm sits (post, pre, peri, branch-output).
    Analyze(analyze::AnalyzeArgs),
    /// Read a model, run passes on it, and write it again (with no passes: a byte-identical copy).
    Convert(convert::ConvertArgs),
    /// Run models and compare outputs: two models on the same inputs, one against stored outputs, or one model
    /// in two runtimes.
    Verify(verify::VerifyArgs),
    /// What a rewrite changed: nodes removed, added and rewired, matched by structure, not by names.
    Diff(diff::DiffArgs),
    /// Write the part of a model between named values as a standalone model.
    Extract(extract::ExtractArgs),
    /// Run a model once; write its outputs (and the inputs used) in the ONNX test-data layout.
    Run(run::RunArgs),
    /// Measure the latency of one or more models (in one or both runtimes) on the same inputs, interleaved.
    Bench(bench::BenchArgs),
    /// List the passes `convert --passes` accepts.
    Passes {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line `args` (the program name first) as the `normshift` program does, process setup
/// included, and returns the exit status: 0 success, 1 verification found a difference, 2 bad input or usage,
/// 3 no runtime could run a model. Usage errors and `--help` print and exit as clap does.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    // Like every Unix filter: when the reader of our output goes away (`normshift dump M | head`), stop quietly
    // instead of failing on the next write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE; no other thread of ours handles signals.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Ctrl-C or SIGTERM while a file is being written: remove what is unfinished, so that the output is either
    // complete or absent, then stop as an interrupted program does (128 + SIGINT).
    let installed = ctrlc::set_handler(|| {
        let abandoned = crate::io::unfinished::abandon();
        match abandoned.written() {
            [] => eprintln!("normshift: interrupted; unfinished files removed"),
            // Past the end of the write (reporting, freeing memory): the output is there and whole.
            written => eprintln!(
                "normshift: interrupted after writing {}; it is complete",
                written
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        std::process::exit(130);
    });
    if let Err(e) = installed {
        eprintln!("normshift: cannot install the interrupt handler: {e}");
        return EXIT_ERROR;
    }
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("normshift: {}{}", one_line(&e), remedy_of(&e));
            exit_code(kind_of(&e))
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Inspect { model, json } => inspect::inspect(&model, json),
        Command::Dump { model, node_names } => inspect::dump(&model, node_names),
        Command::Analyze(args) => analyze::run(args),
        Command::Convert(args) => convert::convert(args),
        Command::Verify(args) => verify::verify(args),
        Command::Extract(args) => extract::extract(args),
        Command::Diff(args) => diff::diff(args),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::bench(args),
        Command::Passes { json } => inspect::passes(json),
    }
}

/// The kind of failure `e` is: that of the first library error in its chain (a request the command line itself
/// refuses is a usage error).
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    e.chain()
        .find_map(|cause| {
            if let Some(e) = cause.downcast_ref::<crate::api::Error>() {
                return Some(e.kind());
            }
            cause.downcast_ref::<UsageError>().map(|_| ErrorKind::Usage)
        })
        .unwrap_or(ErrorKind::Other)
}

/// What the command line's user can do about `e`, as a flag to add (empty when nothing).
fn remedy_of(e: &anyhow::Error) -> &'static str {
    let remedy = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::api::Error>())
        .and_then(crate::api::Error::remedy);
    match remedy {
        Some(crate::api::Remedy::Force) => "; pass --force to allow it",
        None => "",
    }
}

/// The exit status for a failure of kind `kind`.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Runtime => EXIT_RUNTIME,
        _ => EXIT_ERROR,
    }
}

/// A request the command line cannot carry out as given.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error as one line: each cause once, even when a message already ends with its source's text.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Prints warnings the library collected, one line each.
pub fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("normshift: warning: {w}");
    }
}
