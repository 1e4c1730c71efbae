//! `inspect`, `dump` and `passes`: reading commands.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use normshift::ir::text::TextOptions;
use normshift::passes;

use super::print_warnings;
use super::progress::Step;

pub fn load(path: &Path) -> anyhow::Result<normshift::Model> {
    let _step = Step::start(&format!("loading {}", path.display()));
    Ok(normshift::io::load(path)?)
}

pub fn inspect(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let model = load(path)?;
    let s = model.summary();
    if json {
        let mut value = serde_json::to_value(&s)?;
        value["path"] = serde_json::Value::String(path.display().to_string());
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
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
    println!("  nodes       {}", s.nodes);
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
        println!("  functions   {}", s.functions);
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
    Ok(ExitCode::SUCCESS)
}

pub fn dump(path: &Path, node_names: bool) -> anyhow::Result<ExitCode> {
    let model = load(path)?;
    print_warnings(&model.warnings);
    print!("{}", model.to_text(TextOptions { node_names }));
    Ok(ExitCode::SUCCESS)
}

pub fn passes(json: bool) -> anyhow::Result<ExitCode> {
    let all = passes::catalogue();
    if json {
        let list: Vec<_> = all
            .iter()
            .map(|p| serde_json::json!({"name": p.name(), "class": p.class(), "description": p.description()}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).context("serializing the pass list")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &all {
        let class = match p.class() {
            passes::PassClass::Exact => "exact",
            passes::PassClass::FunctionChanging => "function-changing",
        };
        println!("{:<24} {:<18} {}", p.name(), class, p.description());
    }
    Ok(ExitCode::SUCCESS)
}
