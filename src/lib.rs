//! normshift: a compiler for ONNX transformer models that understands where their normalization layers sit.
//!
//! The crate is laid out as the pipeline a model goes through:
//!
//! * [`onnx`] — the protobuf types, generated from the vendored proto2 schema;
//! * [`io`] — loading (memory-mapped, zero-copy weights, safe external data) and atomic, streaming saving;
//! * [`ir`] — the petgraph IR a model is imported into and exported from, its validation and its text form;
//! * [`passes`] — the pass catalogue (`passes/` at the top of the repository, one file per pass);
//! * [`runtime`] — the runtimes that execute models (tract built in, onnxruntime loaded at run time);
//! * [`verify`] — running models in a runtime and comparing their outputs;
//! * [`calibrate`] — refitting the constants of a Post-LN model made Pre-LN, on calibration inputs;
//! * [`convert`] — a whole conversion: passes, verification, the search for a failing pass, writing;
//! * [`tensor`] — reading the numbers inside tensors;
//! * [`limits`] — sizes from files and command lines, checked against a memory budget before anything is
//!   reserved for them;
//! * [`cli`] — the `normshift` command line on top of all of it.
//!
//! A model read and written with no pass in between comes back byte-identical.

pub mod analysis;
pub mod api;
pub mod calibrate;
/// The command line, which the binary and the Python package's command both run. It needs the runtimes.
#[cfg(feature = "tract")]
pub mod cli;
pub mod convert;
pub mod io;
pub mod ir;
pub mod limits;
pub mod onnx;
#[path = "../passes/mod.rs"]
pub mod passes;
#[cfg(feature = "python")]
mod python;
pub mod runtime;
pub mod summary;
pub mod tensor;
pub mod verify;

pub use api::Error;
pub use ir::Model;

/// The `normshift` program: runs the command line `args` (the program name first) and returns its exit status.
/// The binary and the Python package's `normshift` command both run it, so the two are one program.
#[cfg(feature = "tract")]
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    cli::main(args)
}
