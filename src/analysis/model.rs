//! Analysis of a whole model: its main graph and every subgraph body (`If` branches, `Loop`/`Scan` bodies,
//! nested), each analysed as a graph of its own with the constants of the graphs around it in view.

use serde::Serialize;

use super::norms::NormForm;
use super::quantized::without_activation_qdq;
use super::residual::{Analysis, analyze};
use crate::ir::index::GraphIndex;
use crate::ir::subgraph::Scope;
use crate::ir::{Graph, Model, ValidationError};

/// One body's analysis, with where the body is.
#[derive(Debug, Clone, Serialize)]
pub struct BodyAnalysis {
    /// `/If_0/then_branch`: node and attribute from the main graph down.
    pub path: String,
    #[serde(flatten)]
    pub analysis: Analysis,
}

/// The main graph's analysis and its bodies'. When the main graph only dispatches to bodies (optimum's merged
/// decoders: one `If` whose branches each hold the whole decoder), its summary figures are the bodies' — if
/// every body with residual units agrees on them — and `summarised_by_subgraphs` says so; the units and norms
/// themselves are listed per body.
#[derive(Debug, Clone, Serialize)]
pub struct ModelAnalysis {
    #[serde(flatten)]
    pub main: Analysis,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subgraphs: Vec<BodyAnalysis>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub summarised_by_subgraphs: bool,
    /// The model-local functions whose calls analysis saw through, when the model has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<FunctionsSeen>,
}

/// What analysis saw of a model that ships layers as model-local functions: it analysed the model with every
/// call replaced by its function's body ([`Model::inline_functions`]).
#[derive(Debug, Clone, Serialize)]
pub struct FunctionsSeen {
    /// Calls replaced by their bodies (nested calls included).
    pub inlined_calls: usize,
    /// The functions they call, `domain.name`.
    pub functions: Vec<String>,
    /// Calls that could not be seen through, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

/// Analyses a model: its main graph and every subgraph body, through the calls of its model-local functions.
pub fn analyze_model(model: &Model) -> Result<ModelAnalysis, ValidationError> {
    let Some((inlined, outline)) = model.inline_functions()? else {
        return analyze_graphs(model);
    };
    let mut analysis = analyze_graphs(&inlined)?;
    let sits_in = |n: petgraph::stable_graph::NodeIndex| {
        let op = inlined.graph.graph[n].op()?;
        outline.sits_in.get(op.proto.name()).cloned()
    };
    for unit in &mut analysis.main.residual_units {
        unit.function = sits_in(unit.add);
    }
    for norm in &mut analysis.main.norms {
        norm.function = norm.norm.nodes.first().and_then(|&n| sits_in(n));
    }
    analysis.functions = Some(FunctionsSeen {
        inlined_calls: outline.call_count(),
        functions: outline.functions().into_iter().map(String::from).collect(),
        kept: outline.kept.clone(),
    });
    Ok(analysis)
}

fn analyze_graphs(model: &Model) -> Result<ModelAnalysis, ValidationError> {
    let main = analyze_graph(&model.graph);
    let mut subgraphs = Vec::new();
    model
        .graph
        .visit_bodies(&Scope::default(), "", &mut |at, body| {
            subgraphs.push(BodyAnalysis {
                path: at.path.clone(),
                analysis: analyze_graph(body),
            });
            Ok::<_, ValidationError>(())
        })?;
    let mut result = ModelAnalysis {
        main,
        subgraphs,
        summarised_by_subgraphs: false,
        functions: None,
    };
    if let Some(i) = result.agreed_body() {
        let body = &result.subgraphs[i].analysis;
        let main = &mut result.main;
        (main.placement, main.norm, main.parallel) = (body.placement, body.norm, body.parallel);
        (main.embedding_norm, main.final_norm) = (body.embedding_norm, body.final_norm);
        (main.unit_count, main.norm_count) = (body.unit_count, body.norm_count);
        result.summarised_by_subgraphs = true;
    }
    Ok(result)
}

/// One graph's analysis, read through its quantization: activation `QuantizeLinear → DequantizeLinear` pairs
/// are transparent (`quantized::without_activation_qdq`); node and value ids stay the graph's own.
pub fn analyze_graph(graph: &Graph) -> Analysis {
    match without_activation_qdq(graph) {
        Some(view) => {
            let mut analysis = analyze(&GraphIndex::new(&view));
            mark_quantized_inside(&GraphIndex::new(graph), &mut analysis);
            analysis
        }
        None => analyze(&GraphIndex::new(graph)),
    }
}

/// Decomposed norms found through the quantization view whose own steps are quantized in the graph: a value
/// between two of their nodes feeds a `QuantizeLinear`.
fn mark_quantized_inside(graph: &GraphIndex, analysis: &mut Analysis) {
    for info in &mut analysis.norms {
        let norm = &mut info.norm;
        if norm.form != NormForm::Decomposed {
            continue;
        }
        let quantized = norm
            .nodes
            .iter()
            .filter_map(|&n| graph.output(n))
            .filter(|&v| v != norm.output)
            .any(|v| {
                graph.consumers(v).iter().any(|&(c, _)| {
                    graph.graph.graph[c]
                        .op()
                        .is_some_and(|op| op.op_type() == "QuantizeLinear")
                })
            });
        if quantized {
            norm.form = NormForm::QuantizedInside;
        }
    }
}

impl ModelAnalysis {
    /// The graph whose units the model's summary describes: the first body with units when the summary is
    /// the bodies', else the main graph (what `analyze --dot` pictures).
    pub fn summarised(&self) -> &Analysis {
        match self.summarised_by_subgraphs {
            true => self
                .subgraphs
                .iter()
                .map(|b| &b.analysis)
                .find(|a| a.unit_count > 0)
                .unwrap_or(&self.main),
            false => &self.main,
        }
    }

    /// The body whose summary stands for the model: only when the main graph has no units or norms of its own,
    /// and every body that has units reports the same figures.
    fn agreed_body(&self) -> Option<usize> {
        if self.main.unit_count > 0 || self.main.norm_count > 0 {
            return None;
        }
        let mut with_units = self
            .subgraphs
            .iter()
            .enumerate()
            .filter(|(_, b)| b.analysis.unit_count > 0);
        let (first, body) = with_units.next()?;
        with_units
            .all(|(_, b)| b.analysis.same_summary(&body.analysis))
            .then_some(first)
    }
}

impl Analysis {
    fn same_summary(&self, other: &Analysis) -> bool {
        (
            self.placement,
            self.norm,
            self.parallel,
            self.embedding_norm,
            self.final_norm,
            self.unit_count,
            self.norm_count,
        ) == (
            other.placement,
            other.norm,
            other.parallel,
            other.embedding_norm,
            other.final_norm,
            other.unit_count,
            other.norm_count,
        )
    }
}
