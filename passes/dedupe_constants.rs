//! `dedupe-constants` — identical constants become one; their readers share it.
//!
//! * Pattern: initializers with the same element type, shape and bytes; `Constant` nodes with the same
//!   attributes. The first in file order is kept.
//! * Preconditions: the duplicate is not a graph input (its value can be overridden) or output, and is not read
//!   from inside a subgraph (which refers to it by name).
//! * Exact: yes. Readers see the same values.
//!
//! Large tensors are compared byte for byte only when type, shape and length already match, so the pass reads
//! the weights of a model at most once.

use std::collections::HashMap;

use prost::Message;

use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, Model, Patch, Tensor, ValueId};

use super::{Pass, PassClass, PassContext, PassError};

pub struct DedupeConstants;

impl Pass for DedupeConstants {
    fn name(&self) -> &'static str {
        "dedupe-constants"
    }
    fn description(&self) -> &'static str {
        "merge identical initializers and Constant nodes"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn plan(&self, model: &Model, _: &PassContext) -> Result<Patch, PassError> {
        let g = &model.graph;
        let ix = GraphIndex::new(g);
        let movable = |v: ValueId| {
            !g.inputs.contains(&v)
                && !ix.is_graph_output(v)
                && ix
                    .consumers(v)
                    .iter()
                    .all(|(_, s)| *s != InputSlot::Captured)
        };
        let mut patch = Patch::new();
        // Initializers, grouped by what is cheap to compare.
        let mut groups: HashMap<(i32, Vec<i64>, u64), Vec<ValueId>> = HashMap::new();
        for &v in &g.initializers {
            if let Some(t) = g.initializer(v)
                && movable(v)
            {
                groups
                    .entry((t.elem_type(), t.dims().to_vec(), t.byte_len()))
                    .or_default()
                    .push(v);
            }
        }
        let mut groups: Vec<Vec<ValueId>> = groups.into_values().filter(|g| g.len() > 1).collect();
        groups.sort();
        for group in groups {
            let mut kept: Vec<ValueId> = Vec::new();
            for v in group {
                let Some(t) = g.initializer(v) else { continue };
                let same = |k: &&ValueId| {
                    g.initializer(**k)
                        .is_some_and(|first| same_payload(first, t))
                };
                match kept.iter().find(same).copied() {
                    Some(first) => {
                        patch.rewire(v, first.into());
                        patch.drop_initializer(v);
                        patch.sites += 1;
                    }
                    None => kept.push(v),
                }
            }
        }
        // Constant nodes, keyed by their encoded attributes.
        let mut seen: HashMap<Vec<u8>, ValueId> = HashMap::new();
        for &n in ix.ops() {
            let Some(op) = g.graph[n].op() else { continue };
            if op.op_type() != "Constant" || !op.domain().is_empty() {
                continue;
            }
            let Some(out) = ix.output(n) else { continue };
            let key: Vec<u8> = op
                .proto
                .attribute
                .iter()
                .flat_map(|a| a.encode_to_vec())
                .collect();
            match seen.get(&key) {
                Some(&first) if movable(out) => {
                    patch.rewire(out, first.into());
                    patch.remove(n);
                    patch.sites += 1;
                }
                Some(_) => {}
                None => {
                    seen.insert(key, out);
                }
            }
        }
        Ok(patch)
    }
}

/// Whether two tensors hold the same data: raw or external bytes compared in place, typed fields by encoding.
fn same_payload(a: &Tensor, b: &Tensor) -> bool {
    match (a.raw_bytes(), b.raw_bytes()) {
        (Some(x), Some(y)) => x == y,
        (None, None) => {
            let typed = |t: &Tensor| {
                let mut p = t.proto.clone();
                p.name = None;
                p.doc_string = None;
                p.encode_to_vec()
            };
            typed(a) == typed(b)
        }
        _ => false,
    }
}
