//! The analysis as the text table `analyze` prints: a row per unit, then one per norm outside the units, then
//! the model's summary line.

use super::model::ModelAnalysis;
use super::residual::Analysis;

impl ModelAnalysis {
    /// The main graph's table, then one section per subgraph body that holds any norm or unit (the others are
    /// counted), then the model's summary line.
    pub fn table(&self) -> String {
        model_table(self)
    }
}

fn model_table(a: &ModelAnalysis) -> String {
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
            super::NormForm::Fused => "",
            super::NormForm::Decomposed => " (decomposed)",
            super::NormForm::QuantizedInside => " (decomposed, quantized inside)",
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
