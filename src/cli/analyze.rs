//! `normshift analyze`.

use std::path::PathBuf;

use crate::api;
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
    let analysis = api::analyze(&model)?;
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
        print!("{}", analysis.table());
    }
    Ok(EXIT_OK)
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
