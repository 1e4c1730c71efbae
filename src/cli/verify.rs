//! `normshift verify`.

use std::path::PathBuf;

use crate::api::{self, InputsRequest, RuntimeRequest, VerifyRequest};
use crate::runtime::RuntimeKind;
use crate::verify::{ModelRef, RuntimeChoice, Tolerance, UnitRow, VerifyBy, VerifyReport};
use clap::Args;

use super::inspect::load;
use super::progress::Step;
use super::{EXIT_MISMATCH, EXIT_OK, UsageError, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  normshift verify model.onnx rewritten.onnx --seeds 3\n  \
    normshift verify model.onnx --reference model_dir/test_data_set_0\n  \
    normshift verify model.onnx --runtime tract,ort      # does tract compute what onnxruntime computes?\n  \
    normshift verify decoder.onnx decoder2.onnx --dim past_sequence_length=0\n\n\
    An element passes when |a - b| <= atol + rtol * |reference|. Exit status: 0 all outputs match, \
    1 some differ, 2 bad input, 3 no runtime could run a model (the message names the node)."
)]
pub struct VerifyArgs {
    /// The model to run (the reference side when a second model is given).
    pub model: PathBuf,
    /// A second model to run on the same inputs and compare against the first.
    pub other: Option<PathBuf>,
    /// Compare MODEL against stored outputs: a folder with input_K.pb/output_K.pb, or one holding
    /// test_data_set_N folders.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["other", "inputs", "seeds"])]
    pub reference: Option<PathBuf>,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Which runtime runs the models: `auto` (tract; onnxruntime when tract cannot run one of them), `tract`,
    /// `ort`; or two, `tract,ort`, to run one MODEL in both and compare the second against the first.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "auto",
        num_args = 1
    )]
    pub runtime: Vec<RuntimeArg>,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// How to run two models: whole, or unit by unit (cut at the residual stream, one segment in memory at a
    /// time, each unit's error reported). `auto`: unit by unit when the models have residual units.
    #[arg(long, value_enum, default_value = "auto")]
    pub verify_by: VerifyByArg,
    /// When two models' outputs differ: find the first unit whose own error is beyond tolerance, then inside it
    /// the first value that differs (paired by name, or through nodes matched by structure as `diff` matches
    /// them), and print the node computing it in both models.
    #[arg(long, requires = "other")]
    pub bisect: bool,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--verify-by`, as the command line names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerifyByArg {
    /// Unit by unit when the model has residual units, else whole.
    #[default]
    Auto,
    /// Segment by segment: peak memory bounded by the largest unit, not the model.
    Unit,
    /// Both models whole, in one run each.
    Model,
}

impl From<VerifyByArg> for VerifyBy {
    fn from(a: VerifyByArg) -> Self {
        match a {
            VerifyByArg::Auto => VerifyBy::Auto,
            VerifyByArg::Unit => VerifyBy::Unit,
            VerifyByArg::Model => VerifyBy::Model,
        }
    }
}

/// Where a command's inputs come from: a test-data folder, or seeds and dimension sizes to generate them.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Inputs to use instead of generated ones (ONNX test-data layout: input_K.pb, or test_data_set_N folders).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["seeds", "dims"])]
    pub inputs: Option<PathBuf>,
    /// How many seeded random input sets to compare on (seeds 0..N; default 1, for convert 2).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: Option<u64>,
    /// Size for a symbolic input dimension, e.g. --dim sequence=16 --dim past_sequence_length=0 (default: 2
    /// for a leading axis, 7 otherwise; a dim written as an expression of others gets its value).
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
}

impl InputArgs {
    /// The library's request.
    pub fn request(&self) -> InputsRequest {
        InputsRequest {
            inputs: self.inputs.clone(),
            seeds: self.seeds,
            dims: self.dims.clone(),
        }
    }
}

/// A runtime as the command line names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeArg {
    /// tract first; onnxruntime when tract cannot load or run a model (the report says why).
    Auto,
    /// tract, built in.
    Tract,
    /// onnxruntime, from ORT_DYLIB_PATH or the `onnxruntime` Python package, graph optimizations off.
    Ort,
}

impl RuntimeArg {
    pub fn choice(self) -> RuntimeChoice {
        match self {
            RuntimeArg::Auto => RuntimeChoice::Auto,
            RuntimeArg::Tract => RuntimeChoice::Only(RuntimeKind::Tract),
            RuntimeArg::Ort => RuntimeChoice::Only(RuntimeKind::Ort),
        }
    }

    /// The runtime itself, for commands that run one model in each runtime named.
    pub fn kind(self) -> Option<RuntimeKind> {
        match self {
            RuntimeArg::Auto => None,
            RuntimeArg::Tract => Some(RuntimeKind::Tract),
            RuntimeArg::Ort => Some(RuntimeKind::Ort),
        }
    }
}

/// Tolerances of a comparison: an element passes when |a - b| <= atol + rtol * |reference|.
#[derive(Args, Debug, Clone, Copy)]
pub struct ToleranceArgs {
    /// Relative tolerance.
    #[arg(long, default_value_t = 1e-4)]
    pub rtol: f64,
    /// Absolute tolerance.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
}

impl From<ToleranceArgs> for Tolerance {
    fn from(t: ToleranceArgs) -> Self {
        Tolerance {
            rtol: t.rtol,
            atol: t.atol,
            ..Tolerance::default()
        }
    }
}

pub fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (name, size) = s.split_once('=').ok_or("expected NAME=SIZE")?;
    let size = size
        .parse::<usize>()
        .map_err(|e| format!("size `{size}`: {e}"))?;
    if name.is_empty() {
        return Err("expected a name and a size (0 allowed: an empty past, say)".into());
    }
    Ok((name.into(), size))
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let request = VerifyRequest {
        runtime: runtime_request(&args.runtime)?,
        by: args.verify_by.into(),
        bisect: args.bisect,
        inputs: args.inputs.request(),
        tolerance: args.tolerance.into(),
    };
    let a = load(&args.model)?;
    print_warnings(&a.warnings);
    let b = match &args.other {
        Some(path) => {
            let b = load(path)?;
            print_warnings(&b.warnings);
            Some(b)
        }
        None => None,
    };
    let a_ref = ModelRef::loaded(&a, &args.model);
    let b_ref = b
        .as_ref()
        .zip(args.other.as_deref())
        .map(|(b, path)| ModelRef::loaded(b, path));
    let report = {
        let _step = Step::start(match (&b_ref, &request.runtime) {
            (_, RuntimeRequest::Both { .. }) => "running the model in both runtimes",
            (Some(_), _) => "running both models",
            (None, _) => "running the model",
        });
        api::verify(&a_ref, b_ref.as_ref(), args.reference.as_deref(), &request)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
        if args.bisect && report.ok {
            println!("bisect: the outputs agree: nothing to bisect");
        } else if let Some(why) = &report.bisect_failed {
            println!("bisect: could not run: {why}");
        } else if args.bisect && report.bisection.is_none() {
            println!(
                "bisect: no value computed in both models differs inside {} (the difference is in what \
                 the models do not share)",
                report.first_differing.as_deref().unwrap_or("the epilogue")
            );
        }
    }
    Ok(if report.ok { EXIT_OK } else { EXIT_MISMATCH })
}

/// The runtimes `--runtime` names, as the library takes them: one choice, or two runtimes to run one model in.
pub(crate) fn runtime_request(runtimes: &[RuntimeArg]) -> Result<RuntimeRequest, UsageError> {
    match runtimes {
        [one] => Ok(RuntimeRequest::Choice(one.choice())),
        [first, second] => match (first.kind(), second.kind()) {
            (Some(reference), Some(other)) => Ok(RuntimeRequest::Both { reference, other }),
            _ => Err(UsageError(
                "--runtime with two runtimes names them: tract,ort or ort,tract".into(),
            )),
        },
        _ => Err(UsageError(
            "--runtime names one runtime, or two to run one model in both".into(),
        )),
    }
}

pub fn print_report(report: &VerifyReport) {
    let judged = match report.reference_runtime {
        Some(reference) => format!("{} against {reference}", report.runtime),
        None => format!("run by {}", report.runtime),
    };
    println!(
        "{} vs {} (rtol {:e}, atol {:e}; {judged})",
        report.model.display(),
        report.against.display(),
        report.tolerance.rtol,
        report.tolerance.atol
    );
    if let Some(note) = &report.runtime_note {
        println!("  ({note})");
    }
    for run in &report.runs {
        let shapes: Vec<String> = run
            .input_shapes
            .iter()
            .map(|(n, s)| format!("{n} {s:?}"))
            .collect();
        println!("  {}: {}", run.inputs, shapes.join(", "));
        for o in &run.outputs {
            let verdict = if o.ok { "ok  " } else { "DIFF" };
            if let Some(t) = o.raised_tolerance {
                let why = match t.computed_in_half {
                    Some(_) => "the models compute in half precision: a few roundings of that type",
                    None => "half-precision output: one rounding of the type",
                };
                println!(
                    "    ({}: tolerance raised to rtol {:.1e}, atol {:.1e}; {why})",
                    o.name, t.rtol, t.atol
                );
            }
            match &o.problem {
                Some(p) => println!("    {verdict} {}: {p}", o.name),
                None => println!(
                    "    {verdict} {} {:?}  max_abs {:.3e}  max_rel {:.3e}  rel_l2 {:.3e}  cosine {:.8}{}",
                    o.name,
                    o.shape,
                    o.max_abs,
                    o.max_rel,
                    o.rel_l2,
                    o.cosine,
                    if o.ok {
                        String::new()
                    } else {
                        format!("  ({} elements outside tolerance)", o.mismatched)
                    }
                ),
            }
        }
    }
    print_units(&report.units);
    if let Some(segment) = &report.first_differing {
        println!("first difference beyond tolerance: {segment}");
    }
    if let Some(c) = &report.bisection {
        let value = match c.paired_by {
            "name" => format!("`{}`", c.original_value),
            _ => format!(
                "`{}` (`{}` in the second model, paired by structure)",
                c.original_value, c.rewritten_value
            ),
        };
        println!(
            "bisect: in {}, the first value that differs is {value}: max_abs {:.3e}, rel_l2 {:.3e}, cosine {:.8}",
            c.segment, c.figures.max_abs, c.figures.rel_l2, c.figures.cosine
        );
        println!("  first model:  {}", c.original_node);
        println!("  second model: {}", c.rewritten_node);
    }
    println!("{}", if report.ok { "PASS" } else { "FAIL" });
}

/// The per-unit table: each segment's value, its own error (when measured) and the error accumulated to it.
fn print_units(rows: &[UnitRow]) {
    if rows.is_empty() {
        return;
    }
    let own_measured = rows.iter().any(|r| r.own.is_some());
    println!(
        "  per unit (the residual stream after each, worst of the input sets{}):",
        if own_measured {
            "; own: the unit run on the original's input"
        } else {
            ""
        }
    );
    println!(
        "    {:<12} {:<10} {:<10} {:<10} {:<12}{}  value",
        "segment",
        "max_abs",
        "max_rel",
        "rel_l2",
        "cosine",
        if own_measured { "  own max_abs" } else { "" }
    );
    for r in rows {
        let a = &r.accumulated;
        let own = match (own_measured, r.own) {
            (false, _) => String::new(),
            (true, Some(o)) => format!("  {:<11.3e}", o.max_abs),
            (true, None) => format!("  {:<11}", "-"),
        };
        println!(
            "    {:<12} {:<10.3e} {:<10.3e} {:<10.3e} {:<12.8}{own}  {}{}",
            r.segment,
            a.max_abs,
            a.max_rel,
            a.rel_l2,
            a.cosine,
            r.value,
            if r.differs() { "  DIFF" } else { "" }
        );
    }
}
