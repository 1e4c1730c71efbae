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

use crate::convert::ConvertError;
use crate::passes::PassError;
use crate::runtime::RuntimeError;
use crate::verify::VerifyError;

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
            eprintln!("normshift: {}", one_line(&e));
            ErrorKind::of(&e).exit_code()
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

/// What kind of failure an error is. The command line's exit status and the Python package's exception class
/// both follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong: an unknown pass, options that contradict each other, OUT is the input.
    Usage,
    /// A file could not be read or written.
    File,
    /// The model is not a valid ONNX model, or its graph is invalid.
    Model,
    /// The inputs to run the models on could not be read or made.
    Inputs,
    /// A pass refused the model, or produced something invalid.
    Pass,
    /// The models could not be compared (their outputs differ in names or number).
    Verification,
    /// No runtime could load or run a model.
    Runtime,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind of the first cause in `e`'s chain that says what it is.
    pub fn of(e: &anyhow::Error) -> ErrorKind {
        e.chain()
            .find_map(Self::classify)
            .unwrap_or(ErrorKind::Other)
    }

    fn classify(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
        use crate::io::{LoadError, SaveError};
        if let Some(e) = cause.downcast_ref::<ConvertError>() {
            return Some(match e {
                ConvertError::SameFile(_) => ErrorKind::Usage,
                ConvertError::Pass(e) => Self::of_pass(e),
                ConvertError::Verify(e) => Self::of_verify(e),
                ConvertError::Save(e) => Self::of_save(e),
                ConvertError::Calibrate(e) => Self::of_calibrate(e),
            });
        }
        if let Some(e) = cause.downcast_ref::<PassError>() {
            return Some(Self::of_pass(e));
        }
        if let Some(e) = cause.downcast_ref::<crate::calibrate::CalibrateError>() {
            return Some(Self::of_calibrate(e));
        }
        if let Some(e) = cause.downcast_ref::<VerifyError>() {
            return Some(Self::of_verify(e));
        }
        if let Some(e) = cause.downcast_ref::<SaveError>() {
            return Some(Self::of_save(e));
        }
        if let Some(e) = cause.downcast_ref::<LoadError>() {
            return Some(match e {
                LoadError::Io { .. } => ErrorKind::File,
                _ => ErrorKind::Model,
            });
        }
        if cause.downcast_ref::<RuntimeError>().is_some() {
            return Some(ErrorKind::Runtime);
        }
        if let Some(e) = cause.downcast_ref::<crate::ir::ExtractError>() {
            return Some(match e {
                crate::ir::ExtractError::Invalid(_) => ErrorKind::Model,
                _ => ErrorKind::Usage,
            });
        }
        if cause.downcast_ref::<crate::ir::ValidationError>().is_some() {
            return Some(ErrorKind::Model);
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return Some(ErrorKind::Usage);
        }
        None
    }

    fn of_pass(e: &PassError) -> ErrorKind {
        match e {
            PassError::Unknown(_) | PassError::StopAfterUnknown(_) => ErrorKind::Usage,
            PassError::Dump { .. } => ErrorKind::File,
            PassError::Invalid { .. } | PassError::Patch { .. } | PassError::Refused { .. } => {
                ErrorKind::Pass
            }
        }
    }

    fn of_calibrate(e: &crate::calibrate::CalibrateError) -> ErrorKind {
        use crate::calibrate::CalibrateError;
        match e {
            CalibrateError::Refused(_) | CalibrateError::Fit { .. } => ErrorKind::Pass,
            CalibrateError::Inputs { .. } => ErrorKind::Inputs,
            CalibrateError::Run(e) => Self::of_verify(e),
            CalibrateError::Extract(_) => ErrorKind::Model,
            CalibrateError::Patch(e) => Self::of_pass(e),
        }
    }

    fn of_verify(e: &VerifyError) -> ErrorKind {
        match e {
            VerifyError::Runtime(_) | VerifyError::NoRuntime(_) => ErrorKind::Runtime,
            VerifyError::TestData { .. } | VerifyError::Inputs(_) => ErrorKind::Inputs,
            VerifyError::OutputMismatch(_) => ErrorKind::Verification,
            VerifyError::Encode(_) => ErrorKind::Model,
            // Segments are cut from the model's own structure: a failure is the model's (or normshift's).
            VerifyError::Segment(_) => ErrorKind::Model,
        }
    }

    fn of_save(e: &crate::io::SaveError) -> ErrorKind {
        use crate::io::SaveError;
        match e {
            SaveError::Io { .. } => ErrorKind::File,
            SaveError::Invalid(_) | SaveError::Encode(_) => ErrorKind::Model,
            SaveError::TooLargeInline(_)
            | SaveError::BadLocation(_)
            | SaveError::WouldReplaceSource(_) => ErrorKind::Usage,
        }
    }

    /// The name the Python package's exceptions are keyed by.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::File => "file",
            ErrorKind::Model => "model",
            ErrorKind::Inputs => "inputs",
            ErrorKind::Pass => "pass",
            ErrorKind::Verification => "verification",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Other => "other",
        }
    }

    /// The command line's exit status for it.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Runtime => EXIT_RUNTIME,
            _ => EXIT_ERROR,
        }
    }
}

/// A request the command line cannot carry out as given (the Python package raises it as a usage error).
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
