//! `extract`: the subgraph between named values, written as a standalone model.

use std::path::PathBuf;

use super::{EXIT_OK, inspect::load};
use crate::api;

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

pub fn extract(args: ExtractArgs) -> anyhow::Result<u8> {
    let model = load(&args.model)?;
    let report = api::extract(&model, &args.model, &args.from, &args.to, &args.output)?;
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
