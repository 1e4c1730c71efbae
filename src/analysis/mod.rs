//! Analysis: what a model is made of, decided from graph structure and constants alone (never from node or
//! tensor names, which exporters choose freely).
//!
//! * [`norms`] finds every normalization layer, fused or decomposed, strictly;
//! * [`residual`] finds the residual units, their branches, and the role of every norm around them.

pub mod constants;
mod dot;
pub mod norms;
pub mod residual;

pub use norms::{Norm, NormForm, NormKind, Param, find_norms};
pub use residual::{
    Analysis, Branch, BranchKind, NormInfo, Placement, ResidualUnit, Role, analyze,
};
