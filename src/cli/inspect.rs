//! `inspect`, `dump` and `passes`: reading commands.

use std::path::Path;

use crate::api;
use crate::passes::PassClass;
use anyhow::Context;

use super::progress::Step;
use super::{EXIT_OK, print_warnings};

pub fn load(path: &Path) -> anyhow::Result<crate::Model> {
    let _step = Step::start(&format!("loading {}", path.display()));
    Ok(api::load(path)?)
}

pub fn inspect(path: &Path, json: bool) -> anyhow::Result<u8> {
    let model = load(path)?;
    let inspection = api::inspect(&model, path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
        return Ok(EXIT_OK);
    }
    let s = inspection.summary;
    print_warnings(&s.warnings);
    println!("{}", path.display());
    println!("  ir_version  {}", s.ir_version);
    println!("  producer    {} {}", s.producer_name, s.producer_version);
    let opsets: Vec<String> = s
        .opsets
        .iter()
        .map(|o| format!("{}:{}", o.domain, o.version))
        .collect();
    println!("  opsets      {}", opsets.join(", "));
    match s.subgraphs {
        0 => println!("  nodes       {}", s.nodes),
        n => println!(
            "  nodes       {} (and {} in {n} subgraph bodies)",
            s.nodes, s.nodes_in_subgraphs
        ),
    }
    println!(
        "  parameters  {} in {} initializers, {} bytes{}",
        s.parameters,
        s.initializers,
        s.parameter_bytes,
        if s.external_data_bytes > 0 {
            format!(" ({} external)", s.external_data_bytes)
        } else {
            String::new()
        }
    );
    if s.functions > 0 {
        println!(
            "  functions   {} model-local, called {} times (nested calls included), running {} nodes; ops below \
             count what runs",
            s.functions, s.function_calls, s.nodes_in_functions
        );
    }
    for i in &s.inputs {
        println!("  input       {}: {}", i.name, i.r#type);
    }
    for o in &s.outputs {
        println!("  output      {}: {}", o.name, o.r#type);
    }
    println!("  ops");
    let mut ops: Vec<_> = s.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in ops {
        println!("    {n:>6}  {op}");
    }
    Ok(EXIT_OK)
}

pub fn dump(path: &Path, node_names: bool) -> anyhow::Result<u8> {
    let model = load(path)?;
    print_warnings(&model.warnings);
    print!("{}", api::dump(&model, node_names));
    Ok(EXIT_OK)
}

pub fn passes(json: bool) -> anyhow::Result<u8> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&api::passes()).context("serializing the pass list")?
        );
        return Ok(EXIT_OK);
    }
    for p in api::passes() {
        let class = match p.class {
            PassClass::Exact => "exact",
            PassClass::FunctionChanging => "function-changing",
        };
        println!("{:<24} {:<18} {}", p.name, class, p.description);
    }
    Ok(EXIT_OK)
}
