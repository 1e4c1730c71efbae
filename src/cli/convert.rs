//! `normshift convert`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use normshift::io::{DataLayout, SaveOptions, save};
use normshift::passes::{self, PassClass};
use normshift::verify::{DimSizes, InputSource, verify_pair};

use super::inspect::load;
use super::progress::Step;
use super::verify::{ToleranceArgs, print_report};
use super::{EXIT_MISMATCH, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  normshift convert model.onnx -o copy.onnx            # byte-identical copy\n  \
    normshift convert model.onnx -o out.onnx --passes eliminate-dead-nodes\n  \
    normshift convert big.onnx -o out.onnx --external-data  # weights in out.onnx.data\n\n\
    After passes, OUT is verified against IN with tract before it is written: if an exact pass changed the \
    outputs beyond tolerance, nothing is written and the exit status is 1."
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
    /// Skip the tract verification after passes.
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
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
    let runs = passes::run_pipeline(&mut model, &names)?;
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
    let exact = runs.iter().all(|r| r.class == PassClass::Exact);
    let (written, report) = if verify {
        write_verified(&args, &model, &options, exact)?
    } else {
        let _step = Step::start(&format!("writing {}", args.output.display()));
        (save(&model, &args.output, &options)?, None)
    };
    // A function-changing pipeline is expected to differ: it is written and its report says by how much.
    let ok = !exact || report.as_ref().is_none_or(|r| r.ok);
    if args.json {
        let doc = serde_json::json!({
            "input": args.input, "output": args.output, "written": ok,
            "passes": runs, "file": written, "verification": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for r in &runs {
            eprintln!("{}: {} change(s)", r.pass, r.changes);
        }
        if let Some(report) = &report {
            print_report(report);
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
            let failing = runs.iter().map(|r| r.pass).collect::<Vec<_>>().join(",");
            eprintln!(
                "normshift: passes [{failing}] changed the outputs beyond tolerance; {} was not written (rerun one pass at a time to find the one at fault)",
                args.output.display()
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

/// Writes into a private folder beside OUT, verifies that copy against the input, and only then moves it into
/// place, so that a failed verification leaves no output.
fn write_verified(
    args: &ConvertArgs,
    model: &normshift::Model,
    options: &SaveOptions,
    exact: bool,
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
        let source = InputSource::Seeds {
            seeds: vec![0, 1],
            dims: DimSizes::default(),
        };
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
        if report.ok || !exact {
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
