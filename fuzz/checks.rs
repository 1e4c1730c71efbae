//! What the fuzz targets check, shared with `tests/fuzz_regressions.rs` (both include this file by path), so that
//! a minimized crash replays through exactly the steps that found it. Each function panics on a violation.

use std::path::Path;

use normshift::analysis::residual::analyze;
use normshift::io::load_bytes;
use normshift::ir::index::GraphIndex;
use normshift::passes::{PassContext, PassError, catalogue, run_one};
use prost::Message;

/// External data is looked up here: a folder that does not exist, so fuzzed models never reach real files.
const NO_FOLDER: &str = "/nonexistent/normshift-fuzz";

/// Load; if that works, export, load the export and export again: the two exports must be the same bytes.
pub fn import_export(data: &[u8]) {
    let Ok(model) = load_bytes(
        data.to_vec().into(),
        Path::new("fuzz.onnx"),
        Path::new(NO_FOLDER),
    ) else {
        return;
    };
    let Ok(proto) = model.to_proto() else {
        return;
    };
    let bytes = proto.encode_to_vec();
    let again = load_bytes(
        bytes.clone().into(),
        Path::new("fuzz.onnx"),
        Path::new(NO_FOLDER),
    )
    .expect("an exported model loads again");
    let twice = again.to_proto().expect("and exports again").encode_to_vec();
    assert!(bytes == twice, "export → load → export is not stable");
}

/// Load, analyze, then run every pass of the catalogue in turn. A pass may refuse; any other failure, and a
/// graph that no longer exports, is a bug.
pub fn import_passes(data: &[u8]) {
    let Ok(mut model) = load_bytes(
        data.to_vec().into(),
        Path::new("fuzz.onnx"),
        Path::new(NO_FOLDER),
    ) else {
        return;
    };
    let _ = analyze(&GraphIndex::new(&model.graph));
    for pass in catalogue() {
        match run_one(&mut model, pass.as_ref(), &PassContext::default()) {
            Ok(_) | Err(PassError::Refused { .. }) => {}
            Err(e) => panic!("{}: {e}", pass.name()),
        }
        model.to_proto().expect("a validated graph exports");
    }
}
