//! `extract`: the subgraph between named values, written as a standalone model.

use std::path::PathBuf;

use serde::Serialize;

use super::{EXIT_OK, inspect::load};
use crate::analysis::facts::extract_typed;
use crate::io::{SaveOptions, SaveReport, save};

#[derive(clap::Args, Debug)]
#[command(
    long_about = "Writes the part of MODEL that computes the values named by --to from those named by --from, as \
                  a standalone model: the ops in between, the initializers they read (external data is written \
                  beside OUT), and as inputs the --from values plus any graph input the outputs also need. \
                  Inputs and outputs are typed as MODEL declares them, or with the element type and rank \
                  normshift infers.\n\n\
                  Value names are those `normshift dump MODEL` prints. Example, one residual unit of a GPT-2 \
                  export: normshift extract gpt2.onnx -o unit3.onnx --from /h.3/Add_output_0 --to \
                  /h.4/Add_output_0"
)]
pub struct ExtractArgs {
    pub model: PathBuf,
    /// Where to write the extract (external data, if any, goes to OUT.data beside it).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Values that become the extract's inputs, comma-separated (none: start from the graph's inputs).
    #[arg(long, value_delimiter = ',')]
    pub from: Vec<String>,
    /// Values that become the extract's outputs, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ExtractReport {
    model: PathBuf,
    output: PathBuf,
    nodes: usize,
    initializers: usize,
    inputs: Vec<String>,
    outputs: Vec<String>,
    /// `--from` values that were computed in MODEL (the others were its graph inputs).
    added_inputs: Vec<String>,
    /// Graph inputs of MODEL the outputs need that --from did not name.
    implied_inputs: Vec<String>,
    /// `--from` values no output depends on.
    unread_inputs: Vec<String>,
    /// Inputs or outputs whose element type or rank neither MODEL nor inference knows (the official checker
    /// refuses such a model; runtimes take it).
    untyped: Vec<String>,
    file: SaveReport,
}

pub fn extract(args: ExtractArgs) -> anyhow::Result<u8> {
    let model = load(&args.model)?;
    let (part, untyped) = extract_typed(&model, &args.from, &args.to)?;
    let file = save(&part.graph, &args.output, &SaveOptions::default())?;
    let g = &part.graph.graph;
    let names = |ids: &[crate::ir::ValueId]| -> Vec<String> {
        ids.iter().map(|v| g.value(*v).name.clone()).collect()
    };
    let report = ExtractReport {
        model: args.model.clone(),
        output: args.output.clone(),
        nodes: g.op_count(),
        initializers: g.initializers.len(),
        inputs: names(&g.runtime_inputs().collect::<Vec<_>>()),
        outputs: names(&g.outputs),
        added_inputs: part.added_inputs,
        implied_inputs: part.implied_inputs,
        unread_inputs: part.unread_inputs,
        untyped,
        file,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(EXIT_OK);
    }
    println!(
        "wrote {}: {} nodes, {} initializers ({} bytes{})",
        report.output.display(),
        report.nodes,
        report.initializers,
        report.file.model_bytes + report.file.data_bytes,
        match &report.file.data_file {
            Some(f) => format!(", data in {}", f.display()),
            None => String::new(),
        }
    );
    println!("  inputs   {}", report.inputs.join(", "));
    println!("  outputs  {}", report.outputs.join(", "));
    if !report.implied_inputs.is_empty() {
        println!(
            "  also needs the graph inputs {}",
            report.implied_inputs.join(", ")
        );
    }
    if !report.unread_inputs.is_empty() {
        println!(
            "  note: no output depends on {}",
            report.unread_inputs.join(", ")
        );
    }
    if !report.untyped.is_empty() {
        println!(
            "  warning: no element type or rank known for {} (the official checker will refuse the model)",
            report.untyped.join(", ")
        );
    }
    Ok(EXIT_OK)
}
