//! `cleanup` — `eliminate-dead-nodes` and `remove-unused` in one patch: what the manager runs after every pass
//! that changed something, so that a rewrite leaves no orphaned node, weight or type annotation behind.
//!
//! * Pattern: dead nodes as `eliminate-dead-nodes` finds them; then initializers and `value_info` entries that
//!   only those nodes used.
//! * Preconditions: none.
//! * Exact: yes.

use std::collections::HashSet;

use super::eliminate_dead_nodes::EliminateDeadNodes;
use super::remove_unused::unused_after_removing;
use super::{Pass, PassClass, PassContext, PassError};
use crate::ir::{Model, Patch};

pub struct Cleanup;

impl Pass for Cleanup {
    fn name(&self) -> &'static str {
        "cleanup"
    }
    fn description(&self) -> &'static str {
        "eliminate-dead-nodes and remove-unused together (run after every rewrite)"
    }
    fn class(&self) -> PassClass {
        PassClass::Exact
    }
    fn wants_cleanup(&self) -> bool {
        false
    }
    fn plan(&self, model: &Model, cx: &PassContext) -> Result<Patch, PassError> {
        let mut patch = EliminateDeadNodes.plan(model, cx)?;
        let dead: HashSet<_> = patch.removed().iter().copied().collect();
        patch.merge(unused_after_removing(model, &dead));
        Ok(patch)
    }
}

/// Applies the cleanup to `model`; returns how many nodes, initializers and entries went.
pub fn clean(model: &mut Model, cx: &PassContext) -> Result<usize, PassError> {
    let patch = Cleanup.plan(model, cx)?;
    let removed = patch.sites;
    model.apply(patch).map_err(|source| PassError::Patch {
        pass: Cleanup.name(),
        source,
    })?;
    Ok(removed)
}
