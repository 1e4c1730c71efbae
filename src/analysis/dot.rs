//! The picture of an analysis, in Graphviz DOT: the residual stream as a vertical spine, each unit a box on it
//! holding its `⊕` and its branches, norms coloured by role.

use std::fmt::Write;

use super::residual::{Analysis, Role};
use crate::tensor::format_number;

fn role_colour(role: Role) -> &'static str {
    match role {
        Role::Pre => "#4e79a7",
        Role::Post => "#e15759",
        Role::Peri => "#b07aa1",
        Role::BranchOutput => "#f28e2b",
        Role::Embedding => "#59a14f",
        Role::Final => "#76b7b2",
        Role::Internal => "#bab0ac",
    }
}

impl Analysis {
    /// The analysis as a Graphviz `digraph`.
    pub fn to_dot(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph normshift {{");
        let _ = writeln!(
            out,
            "  rankdir=TB; newrank=true; fontname=\"Helvetica\"; node [fontname=\"Helvetica\", fontsize=11]; edge [fontname=\"Helvetica\", fontsize=10];"
        );
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "  label=\"{}\\nplacement {} · norm {} · {} units · parallel {}\"; labelloc=t;",
            title.replace('"', "'"),
            self.placement,
            self.norm,
            self.unit_count,
            yes(self.parallel)
        );
        let norm_node = |out: &mut String, i: usize| {
            let info = &self.norms[i];
            let _ = writeln!(
                out,
                "    norm{i} [shape=box, style=\"rounded,filled\", fillcolor=\"{}\", fontcolor=white, label=\"{} ({})\\nε={}\"];",
                role_colour(info.role),
                info.norm.kind,
                info.role,
                format_number(info.norm.epsilon)
            );
        };
        let _ = writeln!(out, "  input [shape=plaintext, label=\"input\"];");
        let mut stream = "input".to_string();
        let spine = |out: &mut String, from: &str, to: &str| {
            let _ = writeln!(
                out,
                "  {from} -> {to} [penwidth=3, color=\"#333333\", weight=10];"
            );
        };
        if let Some(i) = self.norms.iter().position(|n| n.role == Role::Embedding) {
            norm_node(&mut out, i);
            spine(&mut out, &stream, &format!("norm{i}"));
            stream = format!("norm{i}");
        }
        for (u, unit) in self.residual_units.iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_unit{u} {{");
            let _ = writeln!(
                out,
                "    label=\"unit {u} · {}\"; style=rounded; color=\"#999999\";",
                unit.placement
            );
            let _ = writeln!(out, "    fork{u} [shape=point, width=0.08];");
            let _ = writeln!(out, "    add{u} [shape=circle, label=\"+\"];");
            for (b, branch) in unit.branches.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "    branch{u}_{b} [shape=box, style=filled, fillcolor=\"#eeeeee\", label=\"{}\"];",
                    branch.kind
                );
                let mut from = format!("fork{u}");
                for &i in &branch.pre_norms {
                    norm_node(&mut out, i);
                    let _ = writeln!(out, "    {from} -> norm{i};");
                    from = format!("norm{i}");
                }
                let _ = writeln!(out, "    {from} -> branch{u}_{b};");
                let mut last = format!("branch{u}_{b}");
                if let Some(i) = branch.output_norm {
                    norm_node(&mut out, i);
                    let _ = writeln!(out, "    {last} -> norm{i};");
                    last = format!("norm{i}");
                }
                let _ = writeln!(out, "    {last} -> add{u};");
            }
            let _ = writeln!(out, "  }}");
            spine(&mut out, &stream, &format!("fork{u}"));
            let skip = match unit.skip_scale {
                Some(a) => format!(" skip ×{}", format_number(a)),
                None => " skip".into(),
            };
            let _ = writeln!(
                out,
                "  fork{u} -> add{u} [penwidth=3, color=\"#333333\", weight=10, label=\"{skip}\"];"
            );
            stream = format!("add{u}");
            if let Some(i) = unit.post_norm {
                norm_node(&mut out, i);
                spine(&mut out, &stream, &format!("norm{i}"));
                stream = format!("norm{i}");
            }
        }
        if let Some(i) = self.norms.iter().position(|n| n.role == Role::Final) {
            norm_node(&mut out, i);
            spine(&mut out, &stream, &format!("norm{i}"));
            stream = format!("norm{i}");
        }
        let _ = writeln!(out, "  output [shape=plaintext, label=\"output\"];");
        spine(&mut out, &stream, "output");
        let internal: Vec<usize> = (0..self.norms.len())
            .filter(|&i| self.norms[i].role == Role::Internal)
            .collect();
        if !internal.is_empty() {
            let _ = writeln!(
                out,
                "  subgraph cluster_internal {{ label=\"internal norms (inside sublayers)\"; style=dashed;"
            );
            for i in internal {
                norm_node(&mut out, i);
            }
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}");
        out
    }
}
