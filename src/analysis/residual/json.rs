//! The residual units as `analyze --json` shows them: placement, branch kinds, and norms by index and role.

use serde::Serialize;

use super::types::{BranchKind, Placement, ResidualUnit};

#[derive(Serialize)]
struct UnitJson {
    placement: Placement,
    branches: Vec<BranchKind>,
    norms: Vec<UnitNormJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<String>,
}

#[derive(Serialize)]
struct UnitNormJson {
    index: usize,
    role: &'static str,
}

impl Serialize for ResidualUnit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        unit_json(self).serialize(s)
    }
}

fn unit_json(u: &ResidualUnit) -> UnitJson {
    let peri = |role| {
        if u.placement == Placement::Peri {
            "peri"
        } else {
            role
        }
    };
    let mut norms = Vec::new();
    for b in &u.branches {
        norms.extend(b.pre_norms.iter().map(|&index| UnitNormJson {
            index,
            role: peri("pre"),
        }));
        norms.extend(b.output_norm.iter().map(|&index| UnitNormJson {
            index,
            role: peri("branch-output"),
        }));
    }
    norms.extend(u.post_norm.iter().map(|&index| UnitNormJson {
        index,
        role: "post",
    }));
    norms.sort_by_key(|n| n.index);
    norms.dedup_by_key(|n| n.index);
    UnitJson {
        placement: u.placement,
        branches: u.branches.iter().map(|b| b.kind).collect(),
        norms,
        skip_scale: u.skip_scale,
        function: u.function.clone(),
    }
}
