//! `normshift run`: one run of a model, outputs written in the ONNX test-data layout.

use std::path::PathBuf;

use crate::api::{self, InputsRequest};
use clap::Args;

use super::inspect::load;
use super::progress::Step;
use super::verify::{RuntimeArg, parse_dim};
use super::{EXIT_OK, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  normshift run model.onnx                         # generated inputs (seed 0), print a summary\n  \
    normshift run model.onnx --inputs test_data_set_0 -o out/   # given inputs, outputs as out/output_K.pb\n  \
    normshift run model.onnx --dim sequence=128 --seed 3 -o out/\n\n\
    Generated inputs are valid for the model: token ids below the row count of the table they index, other \
    integer inputs (masks) ones, floats N(0, 1). With -o, the inputs used are written beside the outputs \
    (input_K.pb), so that the run can be repeated or compared."
)]
pub struct RunArgs {
    pub model: PathBuf,
    /// An ONNX test-data folder whose input_K.pb to feed (default: generated inputs).
    #[arg(long, value_name = "DIR")]
    pub inputs: Option<PathBuf>,
    /// Write input_K.pb and output_K.pb into DIR.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Seed of the generated inputs.
    #[arg(long, default_value_t = 0, conflicts_with = "inputs")]
    pub seed: u64,
    /// Size for a symbolic input dimension, e.g. --dim sequence=128 (default: 2 for a leading axis, 7 otherwise).
    #[arg(long = "dim", value_name = "NAME=SIZE", value_parser = parse_dim, conflicts_with = "inputs")]
    pub dims: Vec<(String, usize)>,
    /// Which runtime runs the model: `auto` (tract, or onnxruntime when tract cannot), `tract` or `ort`.
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeArg,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let model = load(&args.model)?;
    print_warnings(&model.warnings);
    let inputs = InputsRequest {
        inputs: args.inputs.clone(),
        seeds: None,
        dims: args.dims.clone(),
    };
    let report = {
        let _step = Step::start("running the model");
        api::run(
            &model,
            &args.model,
            &inputs,
            args.seed,
            args.runtime.choice(),
            args.output.as_deref(),
        )?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(EXIT_OK);
    }
    println!(
        "run by {}{}",
        report.runtime,
        report
            .runtime_note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    );
    for (what, list) in [("input ", &report.inputs), ("output", &report.outputs)] {
        for t in list {
            let list = |v: &[String]| format!("[{}]", v.join(","));
            println!(
                "{what} {}: {} {}  mean {:.6}  std {:.6}  first {}",
                t.name,
                t.r#type,
                list(&t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
                t.mean,
                t.std,
                list(&t.first.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>())
            );
        }
    }
    if let Some(dir) = &report.written {
        println!("wrote {} (input_K.pb, output_K.pb)", dir.display());
    }
    Ok(EXIT_OK)
}
