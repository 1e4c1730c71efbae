//! Subgraphs as standalone graphs: the part of a graph between named values ([`Graph::extract`]), and a
//! partition of a graph into consecutive segments at cut values ([`Graph::segments`]) — what `normshift
//! extract` writes and what segmented verification runs one piece at a time.
//!
//! Extraction works on a clone of the graph, whose tensors share their bytes with the original (external data
//! stays mapped, nothing is copied): the ops the requested outputs need, walked back to the requested inputs,
//! are kept with the initializers and graph inputs they read; every other node goes.

use std::collections::{HashMap, HashSet};

use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{Edge, Graph, Model, Node, NodeKind, Op, ValidationError, ValueId};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("the model has no value named `{0}`")]
    UnknownValue(String),
    #[error(
        "`{0}` is an initializer: only computed values and graph inputs can be inputs of an extract"
    )]
    ConstantInput(String),
    #[error("no outputs were named")]
    NoOutputs,
    #[error("the extracted graph is not valid: {0}")]
    Invalid(#[from] ValidationError),
}

/// An extracted graph or model, and what the extraction noticed.
#[derive(Debug, Clone)]
pub struct Extracted<T> {
    pub graph: T,
    /// Inputs of the extract that were computed values of the original (the others were graph inputs already).
    pub added_inputs: Vec<String>,
    /// Named inputs that none of the named outputs depends on: they are inputs of the extract all the same.
    pub unread_inputs: Vec<String>,
    /// Graph inputs of the original that the outputs need although they were not named: inputs of the extract.
    pub implied_inputs: Vec<String>,
}

/// One piece of a graph cut at a list of values: the values it reads from earlier pieces (or the graph's
/// inputs) and the values later pieces (or the graph's outputs) read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

impl Graph {
    /// The values named, or the first name the graph does not have.
    pub fn values_named(&self, names: &[String]) -> Result<Vec<ValueId>, ExtractError> {
        names
            .iter()
            .map(|n| {
                self.value_id(n)
                    .ok_or_else(|| ExtractError::UnknownValue(n.clone()))
            })
            .collect()
    }

    /// The graph that computes `outputs` from `inputs`: the ops between them, the initializers those read, and
    /// the graph inputs they need besides (which stay inputs). A named input that is computed here becomes a
    /// graph input (typed as this graph declares it, when it does); its producer goes unless an output still
    /// needs it for another of its outputs.
    pub fn extract(
        &self,
        inputs: &[ValueId],
        outputs: &[ValueId],
    ) -> Result<Extracted<Graph>, ExtractError> {
        if outputs.is_empty() {
            return Err(ExtractError::NoOutputs);
        }
        // A graph input with a default (before IR 4, weights were listed so) may be named; a pure initializer not.
        if let Some(&c) = inputs
            .iter()
            .find(|v| self.tensors.contains_key(v) && !self.inputs.contains(v))
        {
            return Err(ExtractError::ConstantInput(self.value(c).name.clone()));
        }
        let (inputs, outputs) = (&dedup(inputs)[..], &dedup(outputs)[..]);
        let cut: HashSet<ValueId> = inputs.iter().copied().collect();
        let producers = self.producer_index();
        let (mut keep, reached) = self.needed(outputs, &cut, &producers);
        // Named inputs that are graph inputs already keep their source.
        keep.extend(
            inputs
                .iter()
                .filter_map(|v| producers.get(v))
                .filter(|(n, _)| self.graph[*n].op().is_none())
                .map(|(n, _)| *n),
        );

        let mut g = self.clone();
        let added = g.detach_inputs(inputs, &keep, &producers);
        let doomed: Vec<NodeIndex> = g
            .graph
            .node_indices()
            .filter(|n| !keep.contains(n) && !added.iter().any(|(_, s)| s == n))
            .collect();
        for n in doomed {
            g.graph.remove_node(n);
        }
        let present: HashSet<ValueId> = g
            .graph
            .node_weights()
            .flat_map(|n| n.outputs.iter().flatten().copied())
            .collect();
        let implied: Vec<ValueId> = self
            .runtime_inputs()
            .filter(|v| present.contains(v) && !cut.contains(v))
            .collect();
        // The named inputs first, in the order named; then the graph inputs the outputs need (and, before IR 4,
        // the initializers still listed as inputs).
        let mut new_inputs: Vec<ValueId> = inputs.to_vec();
        new_inputs.extend(
            self.inputs
                .iter()
                .filter(|v| present.contains(v) && !cut.contains(v)),
        );
        g.inputs = new_inputs;
        g.outputs = outputs.to_vec();
        g.initializers.retain(|v| present.contains(v));
        g.tensors
            .retain(|v, _| present.contains(v) || g.captured.contains(v));
        let interface: HashSet<ValueId> = g.inputs.iter().chain(&g.outputs).copied().collect();
        g.value_info
            .retain(|v| present.contains(v) && !interface.contains(v));
        g.validate()?;
        Ok(Extracted {
            graph: g,
            added_inputs: added
                .iter()
                .map(|(v, _)| self.value(*v).name.clone())
                .collect(),
            unread_inputs: inputs
                .iter()
                .filter(|v| !reached.contains(v))
                .map(|v| self.value(*v).name.clone())
                .collect(),
            implied_inputs: implied
                .iter()
                .map(|v| self.value(*v).name.clone())
                .collect(),
        })
    }

    /// The nodes (ops and sources) that `outputs` need when `cut` values are given, and the cut values reached.
    fn needed(
        &self,
        outputs: &[ValueId],
        cut: &HashSet<ValueId>,
        producers: &HashMap<ValueId, (NodeIndex, usize)>,
    ) -> (HashSet<NodeIndex>, HashSet<ValueId>) {
        let mut keep = HashSet::new();
        let mut reached = HashSet::new();
        let mut seen = HashSet::new();
        let mut stack: Vec<ValueId> = outputs.to_vec();
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            if cut.contains(&v) {
                reached.insert(v);
                continue;
            }
            let Some(&(node, _)) = producers.get(&v) else {
                continue;
            };
            if keep.insert(node) {
                stack.extend(
                    self.graph
                        .edges_directed(node, Direction::Incoming)
                        .map(|e| e.weight().value),
                );
            }
        }
        (keep, reached)
    }

    /// Makes each computed value of `inputs` a graph input: a new source node feeds the kept readers that its
    /// producer fed, and a kept producer writes that slot under a fresh name instead. Returns the values and their new sources.
    fn detach_inputs(
        &mut self,
        inputs: &[ValueId],
        keep: &HashSet<NodeIndex>,
        producers: &HashMap<ValueId, (NodeIndex, usize)>,
    ) -> Vec<(ValueId, NodeIndex)> {
        let mut added = Vec::new();
        for &v in inputs {
            let Some(&(producer, slot)) = producers.get(&v) else {
                continue;
            };
            if self.graph[producer].op().is_none() {
                continue; // a graph input already
            }
            let readers: Vec<(NodeIndex, Edge)> = self
                .graph
                .edges_directed(producer, Direction::Outgoing)
                .filter(|e| e.weight().value == v)
                .map(|e| (e.target(), *e.weight()))
                .collect();
            self.graph.retain_edges(|g, e| {
                g.edge_endpoints(e).map(|(s, _)| s) != Some(producer) || g[e].value != v
            });
            // A producer that stays (an output needs another of its results) still writes that slot, to a
            // fresh name nobody reads: some ops require every output (EmbedLayerNormalization's first).
            let rest = keep.contains(&producer).then(|| {
                let hint = format!("{}_unread", self.value(v).name);
                self.add_value(&hint, None)
            });
            self.graph[producer].outputs[slot] = rest;
            let source = self.graph.add_node(Node {
                kind: NodeKind::Source,
                outputs: vec![Some(v)],
            });
            for (reader, edge) in readers {
                if keep.contains(&reader) {
                    self.graph.add_edge(
                        source,
                        reader,
                        Edge {
                            from_slot: 0,
                            ..edge
                        },
                    );
                }
            }
            added.push((v, source));
        }
        added
    }

    /// Cuts the graph at `cuts` (in stream order) into `cuts.len() + 1` segments: segment `s` computes
    /// `cuts[s]` (the last, the graph's outputs, unless earlier ones computed them all) from what earlier
    /// segments computed. A value a later segment
    /// reads from an earlier one (a cut, or a side value such as an attention mask computed next to a unit)
    /// is an output of the segment that computes it and an input of each that reads it; graph outputs
    /// computed downstream of a cut are outputs of the segment that computes them. Light ops that depend on no
    /// cut value (masks, positions, shapes and rotary tables computed from the graph's inputs; constants;
    /// shapes of any value) are recomputed by every segment that needs them rather than handed on, so that a
    /// runtime sees them as in the whole model; an op reading a large initializer (an embedding table, an
    /// encoder's weights) is computed once and its result handed on.
    ///
    /// Only values `handable` accepts are handed on between segments (besides cuts and graph inputs): a segment
    /// that reads another recomputes its producers up to values that are. Verification cuts a rewritten model
    /// with `handable` = what the original hands on, so that each of its segments can be fed the original's.
    pub fn segments(
        &self,
        cuts: &[ValueId],
        handable: impl Fn(ValueId) -> bool,
    ) -> Result<Vec<Segment>, ValidationError> {
        let order = self.ops_in_order()?;
        let producers = self.producer_index();
        let cut_at: HashMap<ValueId, usize> =
            cuts.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let after_cut = self.handed_on(&order, &cut_at);
        // The segment that computes each value handed on (a cut or the output of an op downstream of one).
        let mut owner: HashMap<ValueId, usize> = HashMap::new();
        let mut assigned: HashMap<NodeIndex, usize> = HashMap::new();
        let mut segments: Vec<Segment> = Vec::with_capacity(cuts.len() + 1);
        for s in 0..=cuts.len() {
            let targets: Vec<ValueId> = match cuts.get(s) {
                Some(&c) => vec![c],
                None => self
                    .outputs
                    .iter()
                    .copied()
                    .filter(|v| !owner.contains_key(v))
                    .collect(),
            };
            if targets.is_empty() {
                // The graph's outputs were all computed by earlier segments (a Post-LN model's last cut is
                // its output): there is no epilogue.
                break;
            }
            let mut inputs: Vec<ValueId> = Vec::new();
            let mut seen = HashSet::new();
            let mut stack = targets.clone();
            while let Some(v) = stack.pop() {
                if !seen.insert(v) {
                    continue;
                }
                if owner.get(&v).is_some_and(|&t| t < s) {
                    inputs.push(v);
                    continue;
                }
                let Some(&(node, _)) = producers.get(&v) else {
                    continue;
                };
                if self.graph[node].op().is_none() {
                    if self.is_runtime_input(v) {
                        inputs.push(v);
                    }
                    continue;
                }
                if after_cut.contains(&node) {
                    match assigned.get(&node) {
                        Some(&t) if t < s && handable(v) => {
                            inputs.push(v);
                            owner.insert(v, t);
                            let out = &mut segments[t].outputs;
                            if !out.contains(&v) {
                                out.push(v);
                            }
                            continue;
                        }
                        // Computed earlier but not to be handed on: recomputed here.
                        Some(_) => {}
                        None => {
                            assigned.insert(node, s);
                        }
                    }
                }
                stack.extend(
                    self.graph
                        .edges_directed(node, Direction::Incoming)
                        .map(|e| e.weight().value),
                );
            }
            for &t in &targets {
                owner.insert(t, s);
            }
            inputs.sort_by_key(|v| (!self.is_runtime_input(*v), order_of(self, &producers, *v)));
            segments.push(Segment {
                inputs,
                outputs: targets,
            });
            // Graph outputs this segment computed are its outputs too (not handed to the last one).
            if s < cuts.len() {
                for &o in &self.outputs {
                    let mine = producers
                        .get(&o)
                        .is_some_and(|(n, _)| assigned.get(n) == Some(&s));
                    if mine && !segments[s].outputs.contains(&o) {
                        segments[s].outputs.push(o);
                        owner.insert(o, s);
                    }
                }
            }
        }
        Ok(segments)
    }

    /// The ops whose results are computed once and handed on: those that read a cut value's contents or a
    /// large initializer, directly or through other ops. `Shape` and `Size` read only a shape: what they
    /// compute is recomputed wherever it is needed (from the value handed on), so that a runtime sees shape
    /// arithmetic as such rather than as tensors fed in (tract cannot reshape by a shape that arrives as an
    /// input).
    fn handed_on(
        &self,
        order: &[NodeIndex],
        cut_at: &HashMap<ValueId, usize>,
    ) -> HashSet<NodeIndex> {
        let mut handed = HashSet::new();
        for &n in order {
            if self.graph[n].op().is_some_and(Op::reads_shape_only) {
                continue;
            }
            let heavy_or_downstream = self.graph.edges_directed(n, Direction::Incoming).any(|e| {
                let v = e.weight().value;
                cut_at.contains_key(&v)
                    || handed.contains(&e.source())
                    || self
                        .tensors
                        .get(&v)
                        .is_some_and(|t| t.byte_len() > RECOMPUTED_WEIGHT_BYTES)
            });
            if heavy_or_downstream {
                handed.insert(n);
            }
        }
        handed
    }
}

/// `ids` without repeats, in first-seen order: a value named twice is one input or output.
fn dedup(ids: &[ValueId]) -> Vec<ValueId> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|v| seen.insert(*v)).collect()
}

/// Ops reading an initializer larger than this are computed once in a segmented run and their results handed
/// on, not recomputed by every segment that reads them (a rotary table's frequencies are small; an embedding
/// table is not).
const RECOMPUTED_WEIGHT_BYTES: u64 = 64 * 1024;

/// Where a value's producer sits in file order (graph inputs first), for a stable input order.
fn order_of(g: &Graph, producers: &HashMap<ValueId, (NodeIndex, usize)>, v: ValueId) -> (u64, u64) {
    producers
        .get(&v)
        .and_then(|(n, _)| g.graph[*n].op())
        .map(|op| (op.order.position, op.order.inserted))
        .unwrap_or((0, v.0 as u64))
}

impl Model {
    /// The model computing `outputs` from `inputs` (see [`Graph::extract`]), with this model's header: opset
    /// imports, IR version, functions and metadata.
    pub fn extract(
        &self,
        inputs: &[ValueId],
        outputs: &[ValueId],
    ) -> Result<Extracted<Model>, ExtractError> {
        let Extracted {
            graph,
            added_inputs,
            unread_inputs,
            implied_inputs,
        } = self.graph.extract(inputs, outputs)?;
        Ok(Extracted {
            graph: Model {
                graph,
                header: self.header.clone(),
                warnings: Vec::new(),
                external_files: self.external_files.clone(),
                source_file: self.source_file.clone(),
            },
            added_inputs,
            unread_inputs,
            implied_inputs,
        })
    }
}
