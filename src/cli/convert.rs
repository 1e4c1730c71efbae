//! `normshift convert`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use normshift::io::{DataLayout, SaveOptions, save};
use normshift::passes::{self, PassClass, PassContext, PipelineOptions, Target};
use normshift::verify::{DimSizes, InputSource, verify_pair};

use super::inspect::load;
use super::progress::Step;
use super::verify::{ToleranceArgs, print_report};
use super::{EXIT_MISMATCH, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  normshift convert model.onnx -o copy.onnx            # byte-identical copy\n  \
    normshift convert bert.onnx -o fused.onnx --passes fuse-layernorm,fuse-rmsnorm\n  \
    normshift convert bert.onnx -o ort.onnx --passes fuse-layernorm --target ort   # SkipLayerNormalization\n  \
    normshift convert fused.onnx -o plain.onnx --passes unfuse-norms\n  \
    normshift convert m.onnx -o out.onnx --passes a,b,c --stop-after b --dump-ir dump/   # bisecting\n  \
    normshift convert big.onnx -o out.onnx --external-data  # weights in out.onnx.data\n\n\
    After passes, OUT is verified against IN with tract (on two seeded inputs) before it is written: if an \
    exact pass changed the outputs beyond tolerance, nothing is written, the exit status is 1, and the passes \
    are rerun one at a time, verifying after each, to name the first one at fault. A pass that raises the opset (fusions need \
    17 or 23) adapts every other node or refuses, naming the node."
)]
pub struct ConvertArgs {
    pub input: PathBuf,
    /// Where to write the result (atomically: nothing is left behind on failure).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Passes to run, in order, comma-separated (`normshift passes` lists them).
    #[arg(long, value_delimiter = ',')]
    pub passes: Vec<String>,
    /// Allow OUT to be the input file itself.
    #[arg(long)]
    pub force: bool,
    /// Write tensors of 1 KiB or more to one external data file (default name: OUT's file name + `.data`).
    #[arg(long, value_name = "LOCATION", num_args = 0..=1, default_missing_value = "", conflicts_with = "inline_data")]
    pub external_data: Option<String>,
    /// Write all tensor data into the model file, even if the input kept it external.
    #[arg(long)]
    pub inline_data: bool,
    /// Which runtime the fused ops are for: standard ONNX ops, or onnxruntime's com.microsoft ops as well.
    #[arg(long, value_enum, default_value_t = TargetArg::Onnx)]
    pub target: TargetArg,
    /// Write the IR text form before and after each pass into DIR (NN-pass.before.txt, NN-pass.after.txt).
    #[arg(long, value_name = "DIR")]
    pub dump_ir: Option<PathBuf>,
    /// Run the passes up to and including PASS, then stop (verify and write as usual).
    #[arg(long, value_name = "PASS")]
    pub stop_after: Option<String>,
    /// With function-changing passes: write OUT only if no output's relative L2 error exceeds X (on any input
    /// set); otherwise exit 1 with the figures, as for an exact pass that failed.
    #[arg(long, value_name = "X")]
    pub max_divergence: Option<f64>,
    /// post-to-pre / pre-to-post: rewrite the units that can be mapped and leave the others as they are (each
    /// named in a note) instead of refusing the model.
    #[arg(long)]
    pub allow_partial: bool,
    /// Skip the tract verification after passes.
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TargetArg {
    /// Standard ONNX ops (LayerNormalization, RMSNormalization).
    Onnx,
    /// onnxruntime: also com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization.
    Ort,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Onnx => Target::Onnx,
            TargetArg::Ort => Target::Ort,
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    if same_file(&args.input, &args.output) && !args.force {
        bail!(
            "{} is the input file; pass --force to overwrite it",
            args.output.display()
        );
    }
    let names: Vec<String> = args
        .passes
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    for name in &names {
        passes::by_name(name)?;
    }
    let mut model = load(&args.input)?;
    print_warnings(&model.warnings);
    let pipeline = PipelineOptions {
        context: PassContext {
            target: args.target.into(),
            allow_partial: args.allow_partial,
        },
        dump_ir: args.dump_ir.clone(),
        stop_after: args.stop_after.clone(),
    };
    let runs = passes::run_pipeline(&mut model, &names, &pipeline)?;
    let layout = match (&args.external_data, args.inline_data) {
        (Some(l), _) if l.is_empty() => DataLayout::External { location: None },
        (Some(l), _) => DataLayout::External {
            location: Some(l.clone()),
        },
        (None, true) => DataLayout::Inline,
        (None, false) => DataLayout::Keep,
    };
    let options = SaveOptions {
        layout,
        replace_sources: args.force,
    };
    let verify = !runs.is_empty() && !args.no_verify;
    // A function-changing pass that changed nothing leaves the function as it was.
    let exact = runs
        .iter()
        .all(|r| r.class == PassClass::Exact || r.changes == 0);
    let (written, report) = if verify {
        write_verified(&args, &model, &options, exact, args.max_divergence)?
    } else {
        let _step = Step::start(&format!("writing {}", args.output.display()));
        (save(&model, &args.output, &options)?, None)
    };
    // A function-changing pipeline is expected to differ: it is written and its report says by how much.
    let ok = report
        .as_ref()
        .is_none_or(|r| accepted(r, exact, args.max_divergence));
    let culprit = if ok || !exact {
        None
    } else {
        first_failing_pass(&args, &runs, &pipeline)?
    };
    // For a function-changing pipeline: where the divergence starts and how it grows, unit by unit.
    let drift = match (&report, exact) {
        (Some(_), false) => {
            let _step = Step::start("measuring the drift unit by unit");
            let original = load(&args.input)?;
            Some(
                normshift::verify::drift_profile(&original, &model, &default_inputs())
                    .map_err(|e| e.to_string()),
            )
        }
        _ => None,
    };
    if args.json {
        let doc = serde_json::json!({
            "input": args.input, "output": args.output, "written": ok,
            "passes": runs, "file": written, "verification": report, "failing_pass": culprit,
            "drift": drift.as_ref().map(|d| match d {
                Ok(rows) => serde_json::json!(rows),
                Err(e) => serde_json::json!({ "error": e }),
            }),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &runs {
            eprintln!(
                "{}: {} change(s){}",
                r.pass,
                r.changes,
                match r.cleaned {
                    0 => String::new(),
                    n => format!(", {n} left unused and removed"),
                }
            );
            for note in &r.notes {
                eprintln!("  {note}");
            }
        }
        if let Some(report) = &report {
            print_report(report);
            if !exact {
                let changing: Vec<&str> = runs
                    .iter()
                    .filter(|r| r.class == PassClass::FunctionChanging)
                    .map(|r| r.pass)
                    .collect();
                eprintln!(
                    "the function changed, as {} does by design: the figures above (per output and input set: \
                     max abs, max rel, relative L2, cosine) say by how much",
                    changing.join(", ")
                );
                match &drift {
                    Some(Ok(rows)) if !rows.is_empty() => {
                        eprintln!(
                            "drift profile (the stream as the next sublayer reads it, worst of 2 input sets):"
                        );
                        eprintln!("  unit   rel_l2      cosine       max_abs    value");
                        for r in rows {
                            eprintln!(
                                "  {:<4}   {:<9.3e}   {:<10.8}   {:<9.3e}  {}",
                                r.unit, r.rel_l2, r.cosine, r.max_abs, r.value
                            );
                        }
                    }
                    Some(Ok(_)) => {
                        eprintln!("drift profile: no unit has a norm reading its sum to probe")
                    }
                    Some(Err(e)) => eprintln!("normshift: warning: no drift profile: {e}"),
                    None => {}
                }
            }
        }
        if ok {
            eprintln!(
                "wrote {} ({} bytes{})",
                args.output.display(),
                written.model_bytes,
                match &written.data_file {
                    Some(p) => format!(", data in {} ({} bytes)", p.display(), written.data_bytes),
                    None => String::new(),
                }
            );
        } else {
            if exact {
                let failing = match culprit {
                    Some(pass) => format!("pass {pass}"),
                    None => "the passes (though rerun one at a time, each verified)".into(),
                };
                eprintln!(
                    "normshift: {failing} changed the outputs beyond tolerance; {} was not written",
                    args.output.display()
                );
            } else {
                eprintln!(
                    "normshift: the outputs moved by a relative L2 error of {:.3e}, above --max-divergence {}; {} \
                     was not written",
                    report.as_ref().map_or(f64::NAN, worst_rel_l2),
                    args.max_divergence.unwrap_or(f64::NAN),
                    args.output.display()
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

/// The largest relative L2 error of any output on any input set.
fn worst_rel_l2(report: &normshift::verify::VerifyReport) -> f64 {
    report
        .runs
        .iter()
        .flat_map(|r| &r.outputs)
        .map(|o| o.rel_l2)
        .fold(0.0, f64::max)
}

/// Whether OUT may be written: an exact pipeline must match; a function-changing one must stay within
/// `--max-divergence` when given.
fn accepted(
    report: &normshift::verify::VerifyReport,
    exact: bool,
    max_divergence: Option<f64>,
) -> bool {
    if exact {
        report.ok
    } else {
        max_divergence.is_none_or(|x| worst_rel_l2(report) <= x)
    }
}

/// After a failed verification of several exact passes: reruns them one at a time, verifying after each, and
/// returns the first after which the outputs no longer match.
fn first_failing_pass(
    args: &ConvertArgs,
    runs: &[passes::PassRun],
    pipeline: &PipelineOptions,
) -> anyhow::Result<Option<&'static str>> {
    if runs.len() == 1 {
        return Ok(Some(runs[0].pass));
    }
    let _step = Step::start("finding the pass at fault");
    let names: Vec<String> = runs.iter().map(|r| r.pass.to_string()).collect();
    let scratch = tempfile::tempdir().context("creating a scratch folder")?;
    let original = load(&args.input)?;
    let mut step = 0;
    passes::first_failing(&original, &names, &pipeline.context, |model| {
        step += 1;
        let staged = scratch.path().join(format!("after-{step}.onnx"));
        save(model, &staged, &SaveOptions::default())?;
        let report = verify_pair(
            &args.input,
            &original,
            &staged,
            model,
            &default_inputs(),
            args.tolerance.into(),
        )?;
        anyhow::Ok(report.ok)
    })
}

fn default_inputs() -> InputSource {
    InputSource::Seeds {
        seeds: vec![0, 1],
        dims: DimSizes::default(),
    }
}

/// Writes into a private folder beside OUT, verifies that copy against the input, and only then moves it into
/// place, so that a failed verification leaves no output.
fn write_verified(
    args: &ConvertArgs,
    model: &normshift::Model,
    options: &SaveOptions,
    exact: bool,
    max_divergence: Option<f64>,
) -> anyhow::Result<(
    normshift::io::SaveReport,
    Option<normshift::verify::VerifyReport>,
)> {
    let out_dir = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = out_dir.join(format!(".normshift-staging-{}", std::process::id()));
    std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = (|| {
        let file_name = args
            .output
            .file_name()
            .context("the output path has no file name")?;
        let staged = staging.join(file_name);
        let written = {
            let _step = Step::start(&format!("writing {}", args.output.display()));
            save(model, &staged, options)?
        };
        let original = load(&args.input)?;
        let source = default_inputs();
        let mut report = {
            let _step = Step::start("verifying with tract");
            verify_pair(
                &args.input,
                &original,
                &staged,
                model,
                &source,
                args.tolerance.into(),
            )?
        };
        // The staged copy is an implementation detail: report what the user named.
        report.against = args.output.clone();
        if accepted(&report, exact, max_divergence) {
            if let Some(data) = &written.data_file {
                let name = data.file_name().context("data file without a name")?;
                std::fs::rename(data, out_dir.join(name))
                    .context("moving the data file into place")?;
            }
            std::fs::rename(&staged, &args.output).context("moving the output into place")?;
        }
        let mut written = written;
        written.data_file = written
            .data_file
            .map(|d| out_dir.join(d.file_name().unwrap_or_default()));
        Ok((written, Some(report)))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}
