//! `normshift verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use normshift::verify::{
    DimSizes, InputSource, Tolerance, VerifyReport, verify_pair, verify_reference,
};

use super::inspect::load;
use super::progress::Step;
use super::{EXIT_MISMATCH, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  normshift verify model.onnx rewritten.onnx --seeds 3\n  \
    normshift verify model.onnx --reference model_dir/test_data_set_0\n\n\
    An element passes when |a - b| <= atol + rtol * |reference|. Exit status: 0 all outputs match, \
    1 some differ, 2 bad input, 3 tract could not run a model (the message names the node)."
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
    /// Inputs to use instead of generated ones (ONNX test-data layout: input_K.pb).
    #[arg(long, value_name = "DIR", conflicts_with = "seeds")]
    pub inputs: Option<PathBuf>,
    /// How many seeded random input sets to compare on (seeds 0..N).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: u64,
    /// Size for a symbolic input dimension, e.g. --dim sequence=16 (default: 2 for a leading axis, 7 otherwise).
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
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
        }
    }
}

pub fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (name, size) = s.split_once('=').ok_or("expected NAME=SIZE")?;
    let size = size
        .parse::<usize>()
        .map_err(|e| format!("size `{size}`: {e}"))?;
    if name.is_empty() || size == 0 {
        return Err("expected a name and a positive size".into());
    }
    Ok((name.into(), size))
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let tol = Tolerance::from(args.tolerance);
    let a = load(&args.model)?;
    print_warnings(&a.warnings);
    let report = match (&args.other, &args.reference) {
        (Some(other), None) => {
            let b = load(other)?;
            print_warnings(&b.warnings);
            let source = match &args.inputs {
                Some(dir) => InputSource::Dir(dir.clone()),
                None => InputSource::Seeds {
                    seeds: (0..args.seeds).collect(),
                    dims: DimSizes {
                        by_name: args.dims.iter().cloned().collect(),
                        ..Default::default()
                    },
                },
            };
            let _step = Step::start("running both models with tract");
            verify_pair(&args.model, &a, other, &b, &source, tol)?
        }
        (None, Some(dir)) => {
            let _step = Step::start("running the model with tract");
            verify_reference(&args.model, &a, dir, tol)?
        }
        _ => bail!("give a second model to compare with, or --reference DIR"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

pub fn print_report(report: &VerifyReport) {
    println!(
        "{} vs {} (rtol {:e}, atol {:e})",
        report.model.display(),
        report.against.display(),
        report.tolerance.rtol,
        report.tolerance.atol
    );
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
                println!(
                    "    (float16 output {}: tolerance raised to rtol {:.1e}, atol {:.1e}, one rounding of the type)",
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
    println!("{}", if report.ok { "PASS" } else { "FAIL" });
}
