//! What analysis reports: residual units, their branches, the norms and the role of each.

use petgraph::stable_graph::NodeIndex;
use serde::Serialize;

use crate::analysis::norms::Norm;
use crate::ir::ValueId;
use crate::ir::index::GraphIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Post,
    Pre,
    Peri,
    BranchOutput,
    None,
    Mixed,
}
spelled!(Placement { Post => "post", Pre => "pre", Peri => "peri", BranchOutput => "branch-output", None => "none", Mixed => "mixed" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchKind {
    Attention,
    Mlp,
    Other,
}
spelled!(BranchKind { Attention => "attention", Mlp => "mlp", Other => "other" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pre,
    Post,
    Peri,
    BranchOutput,
    Embedding,
    Final,
    Internal,
}
spelled!(Role {
    Pre => "pre",
    Post => "post",
    Peri => "peri",
    BranchOutput => "branch-output",
    Embedding => "embedding",
    Final => "final",
    Internal => "internal",
});

#[derive(Debug, Clone)]
pub struct Branch {
    pub kind: BranchKind,
    /// What the branch adds to the stream.
    pub output: ValueId,
    /// Indices into [`Analysis::norms`].
    pub pre_norms: Vec<usize>,
    pub output_norm: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ResidualUnit {
    pub placement: Placement,
    pub branches: Vec<Branch>,
    pub post_norm: Option<usize>,
    /// `α` of a scaled skip `α·x + F(x)`.
    pub skip_scale: Option<f64>,
    /// The `Mul(x, α)` of a scaled skip.
    pub scaled_skip: Option<NodeIndex>,
    /// The stream entering the unit.
    pub stream_in: ValueId,
    /// The summand carrying the stream: `stream_in`, or `α·x` of a scaled skip.
    pub skip: ValueId,
    /// The residual sum; `None` when it exists only inside a fused Skip op (a Post-LN model's
    /// `SkipLayerNormalization` that does not write its sum out).
    pub sum: Option<ValueId>,
    /// The node computing the sum: an `Add`, or a Skip op that also normalizes it. For a sum of more than two
    /// terms (`(x + a) + m`, `x + (a + m)`), the last of the [`adds`](Self::adds).
    pub add: NodeIndex,
    /// Every node of the unit's sum, the last one (`add`) last: one for `x + F(x)`, two for a parallel unit's
    /// `(x + a) + m`, however the exporter grouped the terms.
    pub adds: Vec<NodeIndex>,
    /// The node of [`adds`](Self::adds) that reads the skip summand.
    pub skip_reader: NodeIndex,
    /// The norm computed by the same fused op as the sum (index into [`Analysis::norms`]).
    pub fused_norm: Option<usize>,
    /// The model-local function the unit's sum sits in (innermost first), when the model ships its layers as
    /// functions and analysis saw through their calls.
    pub function: Option<String>,
}

impl ResidualUnit {
    /// The node that reads the stream for the skip connection, and which of its inputs does: the sum node
    /// that takes the skip summand, or the `Mul(x, α)` of a scaled skip.
    pub fn skip_site(&self, ix: &GraphIndex) -> Option<(NodeIndex, usize)> {
        let (node, operand) = match self.scaled_skip {
            Some(mul) => (mul, self.stream_in),
            None => (self.skip_reader, self.skip),
        };
        let slot = ix.inputs(node).iter().position(|v| *v == Some(operand))?;
        Some((node, slot))
    }

    /// What the unit's branches write into the stream: one value per branch.
    pub fn writers(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.branches.iter().map(|b| b.output)
    }

    /// The norms the unit's branches read the stream through (each once, in index order).
    pub fn pre_norms(&self) -> Vec<usize> {
        let mut pre: Vec<usize> = self
            .branches
            .iter()
            .flat_map(|b| b.pre_norms.iter().copied())
            .collect();
        pre.sort_unstable();
        pre.dedup();
        pre
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NormInfo {
    #[serde(flatten)]
    pub norm: Norm,
    pub role: Role,
    /// The unit the norm belongs to (index into `residual_units`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<usize>,
    /// Gemma's `(1 + w)` scale, when the graph computes it.
    pub scale_plus_one: bool,
    /// The model-local function the norm sits in (innermost first), as for [`ResidualUnit::function`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// The kind of the model's norms taken together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSummary {
    LayerNorm,
    RmsNorm,
    Mixed,
    None,
}
spelled!(NormSummary { LayerNorm => "layernorm", RmsNorm => "rmsnorm", Mixed => "mixed", None => "none" });

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub placement: Placement,
    pub norm: NormSummary,
    pub parallel: bool,
    pub embedding_norm: bool,
    pub final_norm: bool,
    pub unit_count: usize,
    pub norm_count: usize,
    /// Serialized as `json.rs` says: placement, branch kinds, norms by index and role.
    pub residual_units: Vec<ResidualUnit>,
    pub norms: Vec<NormInfo>,
}
