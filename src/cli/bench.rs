//! `normshift bench`: latency of one or more models, in one or more runtimes, on the same inputs, measured
//! interleaved.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::runtime::{Prepared, RuntimeKind};
use crate::verify::{DimSizes, ModelRef, Tolerance, compare, generate_inputs, prepare_models};
use anyhow::bail;
use clap::Args;
use serde::Serialize;

use super::inspect::load;
use super::progress::Step;
use super::verify::{RuntimeArg, ToleranceArgs, parse_dim};
use super::{EXIT_OK, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  normshift bench gpt2.onnx gpt2-rms.onnx --batch 1 --seq 128 --runs 200\n  \
    normshift bench gpt2.onnx --runtime tract,ort       # the same model in both runtimes\n\n\
    Every model gets the same inputs (generated from the first model, seed 0). After the warm-up, each round \
    runs every model once, starting with a different one each round, so that a machine's slow moments fall on \
    all models alike. Reported: median, 10th and 90th percentile and minimum per model, the ratio of each \
    median to the first model's, and how far each model's outputs are from the first's."
)]
pub struct BenchArgs {
    /// The models; the first is the baseline of the ratios.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Size of a leading (batch) symbolic dimension.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Size of any other symbolic dimension (sequence length).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Size for a named symbolic dimension, overriding --batch/--seq.
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim)]
    pub dims: Vec<(String, usize)>,
    /// Runtimes to run every model in, side by side: `tract`, `ort`, both (`tract,ort`), or `auto` (tract,
    /// or onnxruntime when tract cannot prepare one of the models).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "auto",
        num_args = 1
    )]
    pub runtime: Vec<RuntimeArg>,
    /// Timed runs per model.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Untimed runs per model first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ModelTiming {
    model: PathBuf,
    runtime: RuntimeKind,
    median_ms: f64,
    p10_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    /// Median over the first model's median.
    ratio: f64,
    /// Largest absolute difference of any output from the first model's.
    max_abs_vs_first: f64,
    /// Whether the outputs match the first model's within the tolerance (default rtol 1e-4, atol 1e-5).
    matches_first: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let first = load(&args.models[0])?;
    print_warnings(&first.warnings);
    let mut dims = DimSizes {
        by_name: args.dims.iter().cloned().collect(),
        leading: args.batch,
        other: args.seq,
    };
    let inputs = generate_inputs(&first, 0, &mut dims)?;
    let models = args
        .models
        .iter()
        .map(|path| {
            let model = if path == &args.models[0] {
                first.clone()
            } else {
                load(path)?
            };
            Ok(ModelRef::loaded(&model, path).source()?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut runners: Vec<Runner> = Vec::new();
    {
        let _step = Step::start("preparing the models");
        for arg in &args.runtime {
            let prepared = prepare_models(arg.choice(), &models, &inputs)?;
            if let Some(note) = &prepared.note {
                eprintln!("normshift: {note}");
            }
            let kind = prepared.runtime;
            runners.extend(
                args.models
                    .iter()
                    .cloned()
                    .zip(prepared.models)
                    .map(|(p, m)| (p, kind, m)),
            );
        }
    }
    drop(models);
    let _step = Step::start("timing");
    let mut reference = Vec::new();
    for (i, (_, _, runner)) in runners.iter_mut().enumerate() {
        for _ in 0..args.warmup.max(1) {
            let outputs = runner.run(&inputs)?;
            if i == 0 {
                reference = outputs;
            }
        }
    }
    let mut times = vec![Vec::with_capacity(args.runs); runners.len()];
    for round in 0..args.runs {
        for k in 0..runners.len() {
            let i = (round + k) % runners.len();
            let started = Instant::now();
            runners[i].2.run(&inputs)?;
            times[i].push(started.elapsed());
        }
    }
    drop(_step);
    let mut rows = Vec::new();
    for (i, (model, runtime, runner)) in runners.iter_mut().enumerate() {
        let outputs = runner.run(&inputs)?;
        let comparisons: Vec<_> = outputs
            .iter()
            .zip(&reference)
            .map(|(o, r)| {
                compare(
                    &o.name,
                    &o.tensor,
                    &r.tensor,
                    Tolerance::from(args.tolerance),
                )
            })
            .collect();
        let t = &mut times[i];
        t.sort();
        rows.push(ModelTiming {
            model: model.clone(),
            runtime: *runtime,
            median_ms: ms(percentile(t, 0.5)),
            p10_ms: ms(percentile(t, 0.1)),
            p90_ms: ms(percentile(t, 0.9)),
            min_ms: ms(t[0]),
            ratio: 0.0,
            max_abs_vs_first: comparisons.iter().map(|c| c.max_abs).fold(0.0, f64::max),
            matches_first: comparisons.len() == reference.len() && comparisons.iter().all(|c| c.ok),
        });
    }
    let base = rows[0].median_ms;
    for r in &mut rows {
        r.ratio = r.median_ms / base;
    }
    let shapes: Vec<String> = inputs
        .iter()
        .map(|i| format!("{} {:?}", i.name, i.tensor.shape()))
        .collect();
    if args.json {
        let doc = serde_json::json!({
            "inputs": shapes, "runs": args.runs, "warmup": args.warmup, "models": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "inputs: {}; {} timed runs per model after {} warm-up, interleaved",
            shapes.join(", "),
            args.runs,
            args.warmup
        );
        println!(
            "{:>10} {:>10} {:>10} {:>10} {:>7}  {:>10}  model",
            "median ms", "p10", "p90", "min", "ratio", "vs first"
        );
        let both = rows.iter().any(|r| r.runtime != rows[0].runtime);
        for r in &rows {
            println!(
                "{:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>7.3}  {:>10}  {}{}",
                r.median_ms,
                r.p10_ms,
                r.p90_ms,
                r.min_ms,
                r.ratio,
                if r.matches_first {
                    format!("{:.1e}", r.max_abs_vs_first)
                } else {
                    format!("DIFF {:.1e}", r.max_abs_vs_first)
                },
                r.model.display(),
                if both {
                    format!("  [{}]", r.runtime)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(EXIT_OK)
}

/// A model prepared in a runtime, with the path it was loaded from.
type Runner = (PathBuf, RuntimeKind, Box<dyn Prepared>);
