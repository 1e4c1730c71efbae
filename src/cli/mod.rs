//! Command definitions (clap derive) and dispatch. Each subcommand lives in its own module.

mod analyze;
mod bench;
mod convert;
mod inspect;
mod progress;
mod run;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use normshift::convert::ConvertError;
use normshift::runtime::RuntimeError;
use normshift::verify::VerifyError;

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

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect { model, json } => inspect::inspect(&model, json),
        Command::Dump { model, node_names } => inspect::dump(&model, node_names),
        Command::Analyze(args) => analyze::run(args),
        Command::Convert(args) => convert::convert(args),
        Command::Verify(args) => verify::verify(args),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::bench(args),
        Command::Passes { json } => inspect::passes(json),
    }
}

/// The exit status an error maps to.
pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        let runtime = matches!(
            cause.downcast_ref::<VerifyError>(),
            Some(VerifyError::Runtime(_) | VerifyError::NoRuntime(_))
        ) || cause.downcast_ref::<RuntimeError>().is_some()
            || matches!(
                cause.downcast_ref::<ConvertError>(),
                Some(ConvertError::Verify(
                    VerifyError::Runtime(_) | VerifyError::NoRuntime(_)
                ))
            );
        if runtime {
            return EXIT_RUNTIME;
        }
    }
    EXIT_ERROR
}

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
