//! `normshift convert`: parses the arguments into the library's [`ConvertRequest`], runs the conversion, and
//! prints its report.

use std::path::PathBuf;

use crate::api::{self, ConvertRequest, OutputLayout};
use crate::calibrate::CalibrationReport;
use crate::convert::{ConvertReport, Drift, Refusal};
use crate::passes::Target;
use clap::Args;

use super::inspect::load;
use super::progress::Stages;
use super::verify::{InputArgs, RuntimeArg, ToleranceArgs, VerifyByArg, print_report};
use super::{EXIT_MISMATCH, EXIT_OK, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  normshift convert model.onnx -o copy.onnx            # byte-identical copy\n  \
    normshift convert bert.onnx -o fused.onnx --passes fuse-layernorm,fuse-rmsnorm\n  \
    normshift convert bert.onnx -o ort.onnx --passes fuse-layernorm --target ort   # SkipLayerNormalization\n  \
    normshift convert fused.onnx -o plain.onnx --passes unfuse-norms\n  \
    normshift convert m.onnx -o out.onnx --passes a,b,c --stop-after b --dump-ir dump/   # bisecting\n  \
    normshift convert big.onnx -o out.onnx --external-data  # weights in out.onnx.data\n\n\
    normshift convert decoder.onnx -o out.onnx --passes fuse-layernorm --dim past_sequence_length=0\n  \
    normshift convert m.onnx -o out.onnx --passes fuse-layernorm --inputs m_dir/ --runtime ort\n\n\
    After passes, the result is run beside IN on the same inputs (two seeded sets, or --inputs) before anything \
    is written: by tract, or by onnxruntime when tract cannot run a model (--runtime chooses; the report says \
    which runtime judged and why). If an exact pass changed the outputs beyond tolerance, nothing is written, \
    the exit status is 1, and the passes are rerun one at a time, verifying after each, to name the first one at \
    fault. A pass that raises the opset (fusions need 17 or 23) adapts every other node or refuses, naming the \
    node. Nothing is written before the end: an interrupt leaves no output and no temporary file."
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
    /// Write the IR text form before and after each pass into DIR (NN-pass.before.txt, NN-pass.after.txt), and
    /// what the pass changed as a structural diff (NN-pass.diff, as `normshift diff` prints it).
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
    /// post-to-pre: refit the Pre-LN model's pre-norms, output projections and final norm on these inputs so
    /// that it approximates the original (ONNX test-data layout: DIR/test_data_set_*/input_K.pb, the model's
    /// real inputs, batch 1 and unpadded; a few dozen sets of tens of tokens). Every --hold-out-every-th set is
    /// held out: the report gives both mappings' figures on those, and they verify the result unless --inputs
    /// says otherwise.
    #[arg(long, value_name = "DIR")]
    pub calibration: Option<PathBuf>,
    /// With --calibration: hold out every N-th set (in folder order) to judge the fit.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "calibration")]
    pub hold_out_every: usize,
    /// Skip the verification after passes (neither model is run).
    #[arg(long)]
    pub no_verify: bool,
    /// Which runtime verifies: `auto` (tract; onnxruntime when tract cannot run a model), `tract` or `ort`.
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeArg,
    #[command(flatten)]
    pub inputs: InputArgs,
    #[command(flatten)]
    pub tolerance: ToleranceArgs,
    /// How to run the two models: whole, or unit by unit (cut at the residual stream, one segment in memory at
    /// a time). `auto`: unit by unit when the model has residual units. Either way the report has a row per unit.
    #[arg(long, value_enum, default_value = "auto")]
    pub verify_by: VerifyByArg,
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

impl ConvertArgs {
    /// The library's request.
    pub(crate) fn request(&self) -> ConvertRequest {
        let layout = match (&self.external_data, self.inline_data) {
            (Some(location), _) => OutputLayout::External(Some(location.clone())),
            (None, true) => OutputLayout::Inline,
            (None, false) => OutputLayout::Keep,
        };
        ConvertRequest {
            passes: self.passes.clone(),
            target: self.target.into(),
            verify: !self.no_verify,
            runtime: self.runtime.choice(),
            verify_by: self.verify_by.into(),
            inputs: self.inputs.request(),
            tolerance: self.tolerance.into(),
            allow_partial: self.allow_partial,
            max_divergence: self.max_divergence,
            calibration: self.calibration.clone(),
            hold_out_every: self.hold_out_every,
            stop_after: self.stop_after.clone(),
            dump_ir: self.dump_ir.clone(),
            layout,
            force: self.force,
        }
    }
}

pub fn convert(args: ConvertArgs) -> anyhow::Result<u8> {
    let request = args.request();
    // A request that cannot run is refused before the model is read.
    request.options()?;
    let model = load(&args.input)?;
    print_warnings(&model.warnings);
    let report = api::convert(
        &model,
        &args.input,
        &args.output,
        &request,
        &mut Stages::default(),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if report.written {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    })
}

/// `what: N change(s), M left unused and removed`, then its notes indented below it.
fn print_changes(what: &str, changes: usize, cleaned: usize, notes: &[String], indent: &str) {
    let cleaned = match cleaned {
        0 => String::new(),
        n => format!(", {n} left unused and removed"),
    };
    eprintln!("{what}: {changes} change(s){cleaned}");
    for note in notes {
        eprintln!("{indent}  {note}");
    }
}

fn print_text(report: &ConvertReport) {
    for r in &report.passes {
        print_changes(r.pass, r.changes, r.cleaned, &r.notes, "");
        for body in &r.subgraphs {
            print_changes(
                &format!("  in {}", body.path),
                body.changes,
                body.cleaned,
                &body.notes,
                "  ",
            );
        }
    }
    if let Some(verification) = &report.verification {
        print_report(verification);
        if !report.exact {
            eprintln!(
                "the function changed, as {} does by design: the figures above (per output and input set: \
                 max abs, max rel, relative L2, cosine) say by how much",
                report.function_changing().join(", ")
            );
            print_drift(report.drift.as_ref());
        }
    }
    if let Some(c) = &report.calibration {
        print_calibration(c);
    }
    match (&report.refusal, &report.file) {
        (None, Some(file)) => eprintln!(
            "wrote {} ({} bytes{})",
            report.output.display(),
            file.model_bytes,
            match &file.data_file {
                Some(p) => format!(", data in {} ({} bytes)", p.display(), file.data_bytes),
                None => String::new(),
            }
        ),
        (Some(refusal), _) => eprintln!(
            "normshift: {}; {} was not written",
            Refusal::reason(refusal),
            report.output.display()
        ),
        (None, None) => {}
    }
}

/// Why a result was refused, in one line.
fn print_drift(drift: Option<&Drift>) {
    match drift {
        Some(Drift::Rows(rows)) if !rows.is_empty() => {
            eprintln!(
                "drift profile (the stream as the next sublayer reads it, worst of the input sets):"
            );
            eprintln!("  unit   rel_l2      cosine       max_abs    value");
            for r in rows {
                eprintln!(
                    "  {:<4}   {:<9.3e}   {:<10.8}   {:<9.3e}  {}",
                    r.unit, r.rel_l2, r.cosine, r.max_abs, r.value
                );
            }
        }
        Some(Drift::Rows(_)) => {
            eprintln!("drift profile: no unit has a norm reading its sum to probe")
        }
        Some(Drift::Failed { error }) => eprintln!("normshift: warning: no drift profile: {error}"),
        None => {}
    }
}

fn print_calibration(c: &CalibrationReport) {
    let f = &c.fitted;
    eprintln!(
        "calibrated post-to-pre on {} tokens of {} input sets in {:.1} s (λ = {}, ridge = {}): {} pre-norms and \
         output projections and the final norm `{}` refitted",
        f.tokens,
        f.sets,
        f.elapsed_s,
        f.settings.lambda,
        f.settings.ridge,
        f.units.len(),
        f.final_norm
    );
    if !f.unshared.is_empty() {
        let copies: usize = f.unshared.iter().map(|u| u.copies).sum();
        let names: Vec<String> = f.unshared.iter().map(|u| format!("`{}`", u.name)).collect();
        eprintln!(
            "  {} shared constant(s) refitted per reader, {copies} copies: the weights grow by {} bytes ({})",
            f.unshared.len(),
            f.added_bytes,
            names.join(", ")
        );
    }
    eprintln!(
        "held out (every {}th set, {} sets, not fitted on) against the original, calibrated vs plain mapping:",
        c.hold_out_every, c.held_out_sets
    );
    eprintln!("  output                token cosine        pooled cosine       relative L2");
    for (a, b) in c.calibrated.outputs.iter().zip(&c.plain.outputs) {
        eprintln!(
            "  {:<20}  {:<8.4} vs {:<7.4}  {:<8.4} vs {:<7.4}  {:<8.4} vs {:<7.4}",
            a.name,
            a.token_cosine,
            b.token_cosine,
            a.pooled_cosine,
            b.pooled_cosine,
            a.rel_l2,
            b.rel_l2
        );
    }
    eprintln!(
        "  unit  cosine (calibrated vs plain)   fit: norm rel_l2  trunk rel_l2 (analytic -> refitted)"
    );
    let row = |unit: usize, fit: String| {
        let probe = |h: &crate::calibrate::HeldOut| {
            let cosine = h.units.iter().find(|r| r.unit == unit).map(|r| r.cosine);
            cosine.map_or("-".to_string(), |v| format!("{v:.4}"))
        };
        eprintln!(
            "  {unit:<4}  {:<8} vs {:<8}             {fit}",
            probe(&c.calibrated),
            probe(&c.plain)
        );
    };
    for k in &f.kept {
        row(k.unit, format!("kept: {}", k.why));
    }
    for u in &f.units {
        let fit = format!(
            "{:<9.3e}         {:.3e} -> {:.3e}",
            u.norm_fit, u.analytic_fit, u.projection_fit
        );
        row(u.unit, fit);
    }
}
