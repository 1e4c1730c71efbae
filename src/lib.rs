//! normshift: a compiler for ONNX transformer models that understands where their normalization layers sit.
//!
//! The crate is laid out as the pipeline a model goes through:
//!
//! * [`onnx`] — the protobuf types, generated from the vendored proto2 schema;
//! * [`io`] — loading (memory-mapped, zero-copy weights, safe external data) and atomic, streaming saving;
//! * [`ir`] — the petgraph IR a model is imported into and exported from, its validation and its text form;
//! * [`passes`] — the pass catalogue (`passes/` at the top of the repository, one file per pass);
//! * [`verify`] — running models with tract and comparing their outputs;
//! * [`tensor`] — reading the numbers inside tensors.
//!
//! A model read and written with no pass in between comes back byte-identical.

pub mod analysis;
pub mod error;
pub mod io;
pub mod ir;
pub mod onnx;
#[path = "../passes/mod.rs"]
pub mod passes;
pub mod summary;
pub mod tensor;
#[cfg(feature = "tract")]
pub mod verify;

pub use error::Error;
pub use ir::Model;
