//! `diff`: what a rewrite changed, node by node, matched by structure.

use std::path::PathBuf;

use serde::Serialize;

use super::inspect::load;
use super::{EXIT_MISMATCH, EXIT_OK, print_warnings};
use crate::api;
use crate::ir::diff::GraphDiff;

#[derive(clap::Args, Debug)]
#[command(
    long_about = "Compares two models node by node, matching nodes by what they compute (op, attributes, \
                  constants' contents, graph inputs by position, and where they sit relative to matched \
                  neighbours), never by node or value names nor by file order: it works on what any tool wrote. \
                  Lists the ops only A has (-), those only B has (+), those both have but fed from elsewhere \
                  (~, with A's line), then constants only A or only B holds. Lines are each model's text form \
                  (`normshift dump`).\n\n\
                  Exit status: 0 the graphs are the same up to names and order, 1 they differ, 2 bad input.",
    after_help = "Example: normshift diff bert.onnx fused.onnx   # the decomposed LayerNorms (-) and the \
                  LayerNormalization ops that replaced them (+)"
)]
pub struct DiffArgs {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Print the diff as JSON: removed, added, rewired (before, after, slots), removed_constants,
    /// added_constants, unchanged.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct DiffReport<'a> {
    a: &'a PathBuf,
    b: &'a PathBuf,
    same: bool,
    #[serde(flatten)]
    diff: &'a GraphDiff,
}

pub fn diff(args: DiffArgs) -> anyhow::Result<u8> {
    let a = load(&args.a)?;
    print_warnings(&a.warnings);
    let b = load(&args.b)?;
    print_warnings(&b.warnings);
    let d = api::diff(&a, &b);
    if args.json {
        let report = DiffReport {
            a: &args.a,
            b: &args.b,
            same: d.is_empty(),
            diff: &d,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("--- {}\n+++ {}", args.a.display(), args.b.display());
        print!("{}", d.to_text());
    }
    Ok(if d.is_empty() { EXIT_OK } else { EXIT_MISMATCH })
}
