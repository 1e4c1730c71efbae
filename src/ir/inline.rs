//! Model-local functions (`ModelProto.functions`): seeing through their calls, and putting back the calls a
//! rewrite did not touch.
//!
//! Exporters ship whole layers as functions (`torch.onnx.export(..., export_modules_as_functions=...)`,
//! onnxscript): the main graph then holds a few calls, and the norms and residual sums sit inside the
//! functions' bodies. [`Model::inline_functions`] replaces every call in the main graph by its function's body
//! (nested calls too), with the body's values renamed under the call's name and the call's attributes
//! substituted where the body refers to them. The [`Outline`] it returns remembers each call, so that
//! [`Outline::restore`] can put back every call whose inlined nodes a rewrite left exactly as they were:
//! a pass rewrites what it must and keeps the functions it does not touch.
//!
//! A call is left as it is (and said, in [`Outline::kept`]) when inlining it could change what it computes: its
//! function imports an opset at another version than the model, or its body holds subgraphs (whose names would
//! need renaming inside). Calls inside subgraph bodies are not inlined.

use std::collections::{HashMap, HashSet};

use super::Model;
use super::validate::ValidationError;
use crate::onnx::{AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto};

/// Functions nested deeper than this are refused rather than risking the stack (and a cycle is refused).
const MAX_DEPTH: usize = 32;

/// One inlined call: the node as it stood, and the nodes it became.
#[derive(Debug, Clone)]
struct Call {
    node: NodeProto,
    expansion: Vec<NodeProto>,
    /// `domain.name` of the function.
    function: String,
    /// The opsets its function imports: a call goes back only while the model imports the same versions.
    opsets: Vec<(String, i64)>,
}

/// How to put back the calls of an inlined model.
#[derive(Debug, Clone, Default)]
pub struct Outline {
    /// In the order they were inlined: a call inside another's body comes after it.
    calls: Vec<Call>,
    /// Calls left as they are, and why.
    pub kept: Vec<String>,
    /// Calls the main graph itself makes (the others are inside function bodies).
    pub top_level_calls: usize,
    /// For every node name of the inlined graph that came from a function body: the function it sits in,
    /// innermost first (`torch.nn.modules.normalization.LayerNorm in transformers...GPT2Block`).
    pub sits_in: HashMap<String, String>,
}

fn key(domain: &str, name: &str, overload: &str) -> (String, String, String) {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    (domain.into(), name.into(), overload.into())
}

fn function_label(f: &FunctionProto) -> String {
    match f.domain() {
        "" => f.name().to_string(),
        d => format!("{d}.{}", f.name()),
    }
}

struct Inliner<'a> {
    functions: HashMap<(String, String, String), &'a FunctionProto>,
    model_opsets: HashMap<String, i64>,
    /// Every name in use (values and nodes), so that renamed values never clash.
    taken: HashSet<String>,
    outline: Outline,
}

impl Model {
    /// Whether the main graph calls a model-local function.
    pub fn calls_functions(&self) -> bool {
        if self.header.functions.is_empty() {
            return false;
        }
        let defined: HashSet<(String, String, String)> = self
            .header
            .functions
            .iter()
            .map(|f| key(f.domain(), f.name(), f.overload()))
            .collect();
        self.graph
            .graph
            .node_weights()
            .filter_map(|n| n.op())
            .any(|op| defined.contains(&key(op.domain(), op.op_type(), op.proto.overload())))
    }

    /// This model with the main graph's calls of model-local functions replaced by their bodies, and how to put
    /// back the calls a rewrite leaves untouched. `None` when the main graph calls none.
    pub fn inline_functions(&self) -> Result<Option<(Model, Outline)>, ValidationError> {
        if !self.calls_functions() {
            return Ok(None);
        }
        let proto = self.to_proto()?;
        let graph = proto.graph.as_ref().ok_or(ValidationError::NoGraph)?;
        let mut inliner = Inliner {
            functions: proto
                .functions
                .iter()
                .map(|f| (key(f.domain(), f.name(), f.overload()), f))
                .collect(),
            model_opsets: proto
                .opset_import
                .iter()
                .map(|o| (o.domain().to_string(), o.version()))
                .collect(),
            taken: names_in(graph),
            outline: Outline::default(),
        };
        let mut nodes = Vec::with_capacity(graph.node.len());
        for node in &graph.node {
            inliner.expand(node, &[], 0, &mut nodes)?;
        }
        let Inliner { outline, .. } = inliner;
        let mut inlined_proto = proto.clone();
        if let Some(g) = inlined_proto.graph.as_mut() {
            g.node = nodes;
        }
        add_function_opsets(&mut inlined_proto, &outline);
        let model = self.reimport(inlined_proto)?;
        Ok(Some((model, outline)))
    }

    /// This model with its calls of model-local functions replaced by their bodies, or the model itself when it
    /// calls none: what verification and calibration work on (the calls hide the residual stream).
    pub fn functions_inlined(&self) -> Result<std::borrow::Cow<'_, Model>, ValidationError> {
        Ok(match self.inline_functions()? {
            Some((model, _)) => std::borrow::Cow::Owned(model),
            None => std::borrow::Cow::Borrowed(self),
        })
    }

    /// A model built from `proto`, a rewritten form of this one: its tensors' external data and this model's
    /// warnings and files carry over.
    fn reimport(&self, proto: ModelProto) -> Result<Model, ValidationError> {
        let external = self
            .graph
            .tensors
            .iter()
            .filter_map(|(&v, t)| Some((self.graph.value(v).name.clone(), t.external.clone()?)))
            .collect();
        let mut model = Model::from_proto(proto, external)?;
        model.warnings = self.warnings.clone();
        model.external_files = self.external_files.clone();
        model.source_file = self.source_file.clone();
        Ok(model)
    }
}

/// Every value and node name of a graph (inputs, initializers, node outputs, node names).
fn names_in(g: &GraphProto) -> HashSet<String> {
    let mut names: HashSet<String> = g
        .input
        .iter()
        .chain(&g.output)
        .chain(&g.value_info)
        .map(|v| v.name().to_string())
        .collect();
    names.extend(g.initializer.iter().map(|t| t.name().to_string()));
    for n in &g.node {
        names.extend(n.output.iter().cloned());
        names.insert(n.name().to_string());
    }
    names
}

/// The model imports every opset its inlined bodies use.
fn add_function_opsets(proto: &mut ModelProto, outline: &Outline) {
    let used: HashSet<&str> = outline.calls.iter().map(|c| c.function.as_str()).collect();
    let mut extra = Vec::new();
    for f in &proto.functions {
        if !used.contains(function_label(f).as_str()) {
            continue;
        }
        for o in &f.opset_import {
            let known = proto
                .opset_import
                .iter()
                .chain(&extra)
                .any(|m| m.domain() == o.domain());
            if !known {
                extra.push(o.clone());
            }
        }
    }
    proto.opset_import.extend(extra);
}

impl Inliner<'_> {
    /// A fresh name from `hint`, never used before in the graph.
    fn fresh(&mut self, hint: String) -> String {
        let mut name = hint.clone();
        let mut n = 0;
        while self.taken.contains(&name) {
            n += 1;
            name = format!("{hint}_{n}");
        }
        self.taken.insert(name.clone());
        name
    }

    /// Appends `node` to `out`, inlined if it calls a model-local function that can be inlined. `within` is
    /// the chain of functions it sits in, outermost first.
    fn expand(
        &mut self,
        node: &NodeProto,
        within: &[String],
        depth: usize,
        out: &mut Vec<NodeProto>,
    ) -> Result<(), ValidationError> {
        let label_of = |node: &NodeProto| node.name().to_string();
        let Some(&f) = self
            .functions
            .get(&key(node.domain(), node.op_type(), node.overload()))
        else {
            self.note_sitting(&label_of(node), within);
            out.push(node.clone());
            return Ok(());
        };
        let function = function_label(f);
        if depth >= MAX_DEPTH || within.contains(&function) {
            return Err(ValidationError::Function(format!(
                "function `{function}` calls itself, or calls nest deeper than {MAX_DEPTH}"
            )));
        }
        if let Some(why) = self.not_inlinable(f) {
            self.outline.kept.push(format!(
                "the call `{}` of `{function}` is left as it is: {why}",
                node.name()
            ));
            self.note_sitting(&label_of(node), within);
            out.push(node.clone());
            return Ok(());
        }
        let body = self.instantiate(node, f)?;
        if depth == 0 {
            self.outline.top_level_calls += 1;
        }
        self.outline.calls.push(Call {
            node: node.clone(),
            expansion: body.clone(),
            function: function.clone(),
            opsets: f
                .opset_import
                .iter()
                .map(|o| (o.domain().to_string(), o.version()))
                .collect(),
        });
        let mut inner = within.to_vec();
        inner.push(function);
        let mut expanded = Vec::with_capacity(body.len());
        for n in &body {
            self.expand(n, &inner, depth + 1, &mut expanded)?;
        }
        // Nested calls expanded too: `restore` puts inner calls back before the calls around them.
        out.extend(expanded);
        Ok(())
    }

    fn note_sitting(&mut self, name: &str, within: &[String]) {
        if within.is_empty() || name.is_empty() {
            return;
        }
        let chain: Vec<&str> = within.iter().rev().map(String::as_str).collect();
        self.outline
            .sits_in
            .insert(name.to_string(), chain.join(" in "));
    }

    /// Why calls of `f` cannot be inlined without changing what they compute, if they cannot.
    fn not_inlinable(&self, f: &FunctionProto) -> Option<String> {
        for o in &f.opset_import {
            if let Some(&v) = self.model_opsets.get(o.domain())
                && v != o.version()
            {
                return Some(format!(
                    "its body uses opset {} of `{}`, the model {v}",
                    o.version(),
                    if o.domain().is_empty() {
                        "ai.onnx"
                    } else {
                        o.domain()
                    }
                ));
            }
        }
        let subgraphs = f
            .node
            .iter()
            .flat_map(|n| &n.attribute)
            .any(|a| a.g.is_some() || !a.graphs.is_empty());
        subgraphs.then(|| "its body holds subgraphs".to_string())
    }

    /// The body of `f` for the call `call`: formal inputs and outputs replaced by the call's values, every other
    /// value and node renamed under the call's name, attribute references resolved.
    fn instantiate(
        &mut self,
        call: &NodeProto,
        f: &FunctionProto,
    ) -> Result<Vec<NodeProto>, ValidationError> {
        let prefix = match call.name() {
            "" => self.fresh(format!("{}_call", f.name())),
            name => name.to_string(),
        };
        let mut rename: HashMap<String, String> = HashMap::new();
        for (i, formal) in f.input.iter().enumerate() {
            rename.insert(
                formal.clone(),
                call.input.get(i).cloned().unwrap_or_default(),
            );
        }
        for (i, formal) in f.output.iter().enumerate() {
            let actual = match call.output.get(i).map(String::as_str) {
                Some("") | None => self.fresh(format!("{prefix}/{formal}")),
                Some(actual) => actual.to_string(),
            };
            rename.insert(formal.clone(), actual);
        }
        let defaults: HashMap<&str, &AttributeProto> =
            f.attribute_proto.iter().map(|a| (a.name(), a)).collect();
        let given: HashMap<&str, &AttributeProto> =
            call.attribute.iter().map(|a| (a.name(), a)).collect();
        let mut body = Vec::with_capacity(f.node.len());
        for n in &f.node {
            let mut node = n.clone();
            for v in node.input.iter_mut().chain(node.output.iter_mut()) {
                if v.is_empty() {
                    continue;
                }
                let renamed = match rename.get(v.as_str()) {
                    Some(r) => r.clone(),
                    None => {
                        let fresh = self.fresh(format!("{prefix}/{v}"));
                        rename.insert(v.clone(), fresh.clone());
                        fresh
                    }
                };
                *v = renamed;
            }
            if !n.name().is_empty() || !call.name().is_empty() {
                let hint = match n.name() {
                    "" => format!("{prefix}/{}", n.op_type()),
                    inner => format!("{prefix}/{inner}"),
                };
                node.name = Some(self.fresh(hint));
            }
            node.attribute = n
                .attribute
                .iter()
                .filter_map(|a| resolve_attribute(a, &given, &defaults))
                .collect();
            body.push(node);
        }
        Ok(body)
    }
}

/// An attribute of a body node with its reference (`ref_attr_name`) to the call's attributes resolved: the
/// call's value, else the function's default, else none (the attribute is then unspecified).
fn resolve_attribute(
    a: &AttributeProto,
    given: &HashMap<&str, &AttributeProto>,
    defaults: &HashMap<&str, &AttributeProto>,
) -> Option<AttributeProto> {
    let Some(reference) = a.ref_attr_name.as_deref().filter(|r| !r.is_empty()) else {
        return Some(a.clone());
    };
    let source = given.get(reference).or_else(|| defaults.get(reference))?;
    let mut resolved = (*source).clone();
    resolved.name = a.name.clone();
    resolved.ref_attr_name = None;
    Some(resolved)
}

impl Outline {
    /// How many calls were replaced by their bodies, nested calls included.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// The functions of the calls that were inlined, each once.
    pub fn functions(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for c in &self.calls {
            if !seen.contains(&c.function.as_str()) {
                seen.push(&c.function);
            }
        }
        seen
    }

    /// `inlined` (the inlined model after rewrites) with every call put back whose nodes are all still there,
    /// exactly as inlined, and whose inner values nothing else reads; functions no call uses any more are
    /// dropped from the model. Inner calls are put back before the calls around them.
    pub fn restore(
        &self,
        original: &Model,
        inlined: &Model,
    ) -> Result<(Model, usize), ValidationError> {
        let mut proto = inlined.to_proto()?;
        let versions: HashMap<String, i64> = proto
            .opset_import
            .iter()
            .map(|o| (o.domain().to_string(), o.version()))
            .collect();
        let graph = proto.graph.as_mut().ok_or(ValidationError::NoGraph)?;
        let mut nodes: Vec<Option<NodeProto>> = std::mem::take(&mut graph.node)
            .into_iter()
            .map(Some)
            .collect();
        let outputs: HashSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
        let mut put = 0;
        for call in self.calls.iter().rev() {
            // A pass that upgraded the model's opset adapted the inlined nodes: a call whose function imports
            // the old version stays inlined.
            let same_opsets = call
                .opsets
                .iter()
                .all(|(d, v)| versions.get(d).is_none_or(|m| m == v));
            if same_opsets && put_back(call, &mut nodes, &outputs) {
                put += 1;
            }
        }
        graph.node = nodes.into_iter().flatten().collect();
        drop_inlining_opsets(&mut proto, original);
        drop_unused_functions(&mut proto);
        Ok((inlined.reimport(proto)?, put))
    }
}

/// Replaces `call`'s expansion in `nodes` by the call, if the expansion is all there unchanged and its inner
/// values are read only inside it.
fn put_back(call: &Call, nodes: &mut [Option<NodeProto>], graph_outputs: &HashSet<String>) -> bool {
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut found = Vec::with_capacity(call.expansion.len());
    for e in &call.expansion {
        let at = e
            .output
            .iter()
            .find(|o| !o.is_empty())
            .and_then(|o| producer.get(o.as_str()).copied())
            .filter(|&i| nodes[i].as_ref() == Some(e));
        match at {
            Some(i) => found.push(i),
            None => return false,
        }
    }
    let inside: HashSet<usize> = found.iter().copied().collect();
    let inner: HashSet<&str> = call
        .expansion
        .iter()
        .flat_map(|e| e.output.iter())
        .map(String::as_str)
        .filter(|o| !o.is_empty() && !call.node.output.iter().any(|c| c == o))
        .collect();
    let read_outside = nodes.iter().enumerate().any(|(i, n)| {
        !inside.contains(&i)
            && n.as_ref()
                .is_some_and(|n| n.input.iter().any(|v| inner.contains(v.as_str())))
    });
    if read_outside || inner.iter().any(|v| graph_outputs.contains(*v)) {
        return false;
    }
    let Some(&first) = found.iter().min() else {
        return false;
    };
    for &i in &found {
        nodes[i] = None;
    }
    nodes[first] = Some(call.node.clone());
    true
}

/// The opset imports inlining added for the functions' domains go again where no node of the main graph uses
/// them any more (the calls were put back); the model's own imports stay, at the versions the passes left.
fn drop_inlining_opsets(proto: &mut ModelProto, original: &Model) {
    let Some(graph) = proto.graph.as_ref() else {
        return;
    };
    let used: HashSet<String> = graph.node.iter().map(|n| n.domain().to_string()).collect();
    let own: HashSet<&str> = original
        .header
        .opset_import
        .iter()
        .map(|o| o.domain())
        .collect();
    proto
        .opset_import
        .retain(|o| own.contains(o.domain()) || used.contains(o.domain()));
}

/// Drops the functions that neither the main graph nor another kept function calls any more.
fn drop_unused_functions(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_ref() else {
        return;
    };
    let calls = |nodes: &[NodeProto]| -> Vec<(String, String, String)> {
        nodes
            .iter()
            .map(|n| key(n.domain(), n.op_type(), n.overload()))
            .collect()
    };
    let mut used: HashSet<(String, String, String)> = calls(&graph.node).into_iter().collect();
    // Functions called from kept functions are used too: grow the set until it stops.
    loop {
        let before = used.len();
        for f in &proto.functions {
            if used.contains(&key(f.domain(), f.name(), f.overload())) {
                used.extend(calls(&f.node));
            }
        }
        if used.len() == before {
            break;
        }
    }
    proto
        .functions
        .retain(|f| used.contains(&key(f.domain(), f.name(), f.overload())));
}
