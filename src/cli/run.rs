//! `normshift run`: one run of a model, outputs written in the ONNX test-data layout.

use std::path::PathBuf;

use crate::verify::{
    DimSizes, InputSet, ModelRef, Named, first_that_runs, generate_inputs, load_test_data,
    write_test_data,
};
use anyhow::Context;
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

/// Shape and simple statistics of one tensor, as `run` reports it.
fn summary(t: &Named) -> serde_json::Value {
    let values = t.tensor.to_f64();
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    serde_json::json!({
        "name": t.name,
        "type": t.tensor.elem_type(),
        "shape": t.tensor.shape(),
        "mean": mean,
        "std": std,
        "first": values.iter().take(4).collect::<Vec<_>>(),
    })
}

pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let model = load(&args.model)?;
    print_warnings(&model.warnings);
    let inputs = match &args.inputs {
        Some(dir) => load_test_data(dir)?.inputs,
        None => {
            let mut dims = DimSizes {
                by_name: args.dims.iter().cloned().collect(),
                ..Default::default()
            };
            generate_inputs(&model, args.seed, &mut dims)?
        }
    };
    let sets = [InputSet {
        label: "inputs".into(),
        inputs,
    }];
    let crate::verify::Outputs {
        runtime,
        sets: mut outputs,
        note,
    } = {
        let _step = Step::start("running the model");
        first_that_runs(
            args.runtime.choice(),
            &ModelRef::loaded(&model, &args.model),
            &sets,
        )?
    };
    let outputs = outputs.pop().unwrap_or_default();
    let [InputSet { inputs, .. }] = sets;
    if let Some(dir) = &args.output {
        write_test_data(dir, &inputs, &outputs)
            .with_context(|| format!("writing the outputs into {}", dir.display()))?;
    }
    let report = serde_json::json!({
        "model": args.model,
        "runtime": runtime,
        "runtime_note": note,
        "inputs": inputs.iter().map(summary).collect::<Vec<_>>(),
        "outputs": outputs.iter().map(summary).collect::<Vec<_>>(),
        "written": args.output,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(EXIT_OK);
    }
    println!(
        "run by {runtime}{}",
        note.map(|n| format!(" ({n})")).unwrap_or_default()
    );
    for (what, list) in [
        ("input ", &report["inputs"]),
        ("output", &report["outputs"]),
    ] {
        for t in list.as_array().into_iter().flatten() {
            println!(
                "{what} {}: {} {}  mean {:.6}  std {:.6}  first {}",
                t["name"].as_str().unwrap_or(""),
                t["type"].as_str().unwrap_or(""),
                t["shape"],
                t["mean"].as_f64().unwrap_or(f64::NAN),
                t["std"].as_f64().unwrap_or(f64::NAN),
                t["first"]
            );
        }
    }
    if let Some(dir) = &args.output {
        println!("wrote {} (input_K.pb, output_K.pb)", dir.display());
    }
    Ok(EXIT_OK)
}
