//! Analysis: what a model is made of, decided from graph structure and constants alone (never from node or
//! tensor names, which exporters choose freely).
//!
//! * [`norms`] finds every normalization layer, fused or decomposed, strictly;
//! * [`residual`] finds the residual units, their branches, and the role of every norm around them;
//! * [`facts`] derives element types and ranks where the file does not declare them.

/// Gives a fieldless enum its one spelling: `as_str`, `Display` and `Serialize` all use it.
macro_rules! spelled {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),*
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

pub mod constants;
mod dot;
pub mod facts;
mod model;
pub mod norms;
pub mod quantized;
pub mod residual;
mod table;

pub use model::{BodyAnalysis, FunctionsSeen, ModelAnalysis, analyze_graph, analyze_model};
pub use norms::{FusedSlots, Norm, NormForm, NormKind, Param, embed_slots, find_norms};
pub use residual::{
    Analysis, Branch, BranchKind, NormInfo, NormSummary, PASS_THROUGH, Placement, ResidualUnit,
    Role, Stream, StreamError, analyze, keeps_zero_mean, origin, shape_steps,
};
