//! `normshift analyze`.

use std::path::PathBuf;

use crate::analysis::{Analysis, ModelAnalysis, analyze_model};
use anyhow::{Context, bail};
use clap::Args;

use super::inspect::load;
use super::{EXIT_OK, print_warnings};

#[derive(Args, Debug)]
#[command(
    after_help = "Placement of the norms around each residual unit y = x + F(x):\n  \
    post           N(x + F(x))            original Transformer, BERT\n  \
    pre            x + F(N(x))            GPT-2, LLaMA (with a final norm)\n  \
    peri           x + N2(F(N1(x)))       Gemma 2 (\"sandwich\")\n  \
    branch-output  x + N(F(x))            OLMo 2\n\
    A parallel unit adds an attention and an MLP branch of the same x (GPT-J, GPT-NeoX)."
)]
pub struct AnalyzeArgs {
    pub model: PathBuf,
    /// Print the analysis as JSON (schema in docs/analysis.md).
    #[arg(long)]
    pub json: bool,
    /// Write the architecture picture as Graphviz DOT to FILE.
    #[arg(long, value_name = "FILE")]
    pub dot: Option<PathBuf>,
    /// Render the picture to an SVG FILE (needs Graphviz's `dot` on the PATH).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<u8> {
    let model = load(&args.model)?;
    print_warnings(&model.warnings);
    let analysis = analyze_model(&model)?;
    let title = args.model.display().to_string();
    let pictured = analysis.summarised();
    if let Some(path) = &args.dot {
        write_file(path, pictured.to_dot(&title).as_bytes())?;
    }
    if let Some(path) = &args.svg {
        write_file(path, &render_svg(&pictured.to_dot(&title))?)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&analysis)?);
    } else {
        print!("{}", model_table(&analysis));
    }
    Ok(EXIT_OK)
}

/// The main graph's table, then one section per subgraph body that holds any norm or unit (the others are
/// counted), then the model's summary line.
pub fn model_table(a: &ModelAnalysis) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if !a.summarised_by_subgraphs {
        out.push_str(&unit_rows(&a.main));
    }
    let (shown, plain): (Vec<_>, Vec<_>) = a
        .subgraphs
        .iter()
        .partition(|b| b.analysis.unit_count > 0 || b.analysis.norm_count > 0);
    for body in &shown {
        let _ = writeln!(out, "\n{}", body.path);
        out.push_str(&unit_rows(&body.analysis));
        let _ = writeln!(out, "{}", summary_line(&body.analysis));
    }
    if !plain.is_empty() {
        let _ = writeln!(
            out,
            "\n{} more subgraph bodies with no norms or residual units",
            plain.len()
        );
    }
    if !a.subgraphs.is_empty() {
        let _ = writeln!(
            out,
            "\nmodel{}:",
            if a.summarised_by_subgraphs {
                " (as its subgraph bodies agree)"
            } else {
                " (main graph)"
            }
        );
    } else {
        out.push('\n');
    }
    let _ = writeln!(out, "{}", summary_line(&a.main));
    if let Some(f) = &a.functions {
        let _ = writeln!(
            out,
            "seen through {} calls of model-local functions ({})",
            f.inlined_calls,
            f.functions.join(", ")
        );
        for kept in &f.kept {
            let _ = writeln!(out, "  {kept}");
        }
    }
    out
}

/// One row per unit, then one per norm outside the units.
fn unit_rows(a: &Analysis) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let norm_label = |i: usize| {
        let n = &a.norms[i].norm;
        let form = match n.form {
            crate::analysis::NormForm::Fused => "",
            crate::analysis::NormForm::Decomposed => " (decomposed)",
            crate::analysis::NormForm::QuantizedInside => " (decomposed, quantized inside)",
        };
        format!(
            "#{i} {}{form} ε={}",
            n.kind,
            crate::tensor::format_number(n.epsilon)
        )
    };
    let _ = writeln!(
        out,
        "{:<5} {:<14} {:<20} norms",
        "unit", "placement", "branches"
    );
    for (u, unit) in a.residual_units.iter().enumerate() {
        let branches: Vec<&str> = unit.branches.iter().map(|b| b.kind.as_str()).collect();
        let mut norms = Vec::new();
        for b in &unit.branches {
            norms.extend(
                b.pre_norms
                    .iter()
                    .map(|&i| format!("pre {}", norm_label(i))),
            );
            norms.extend(
                b.output_norm
                    .iter()
                    .map(|&i| format!("branch-output {}", norm_label(i))),
            );
        }
        norms.extend(
            unit.post_norm
                .iter()
                .map(|&i| format!("post {}", norm_label(i))),
        );
        norms.dedup();
        let within = unit
            .function
            .as_ref()
            .map(|f| format!("  (in {f})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<5} {:<14} {:<20} {}{within}",
            u,
            unit.placement,
            branches.join("+"),
            norms.join(", ")
        );
    }
    for (i, n) in a.norms.iter().enumerate().filter(|(_, n)| n.unit.is_none()) {
        let _ = writeln!(
            out,
            "{:<5} {:<14} {:<20} {}",
            "-",
            n.role,
            "",
            norm_label(i)
        );
    }
    out
}

fn summary_line(a: &Analysis) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "placement {} · norm {} · {} residual units · parallel {} · embedding norm {} · final norm {} · {} norms",
        a.placement,
        a.norm,
        a.unit_count,
        yes(a.parallel),
        yes(a.embedding_norm),
        yes(a.final_norm),
        a.norm_count
    )
}

fn write_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("normshift-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs Graphviz `dot -Tsvg` on the DOT text.
fn render_svg(dot: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = match Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "--svg needs Graphviz's `dot` on the PATH (e.g. apt-get install graphviz); --dot FILE writes the DOT text without it"
            )
        }
        Err(e) => return Err(e).context("cannot start Graphviz `dot`"),
    };
    child
        .stdin
        .take()
        .context("no stdin for dot")?
        .write_all(dot.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "Graphviz `dot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}
