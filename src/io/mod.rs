//! Reading and writing ONNX files: memory-mapped loading with zero-copy tensor data, external data resolved
//! safely, and atomic, streaming writes.

mod external;
mod load;
mod save;
mod stream;
pub mod unfinished;

pub use external::{ExternalDataError, refer_to_source};
pub use load::{LoadError, load, load_bytes};
pub use save::{DataLayout, SaveError, SaveOptions, SaveReport, save};

/// Tensors at least this large go to the external data file when one is written (the `onnx` package's default).
pub const EXTERNAL_THRESHOLD: u64 = 1024;

/// Protobuf cannot encode a message of 2 GiB or more: above this estimate, weights go external automatically.
pub const PROTOBUF_LIMIT: u64 = (1 << 31) - 1;
