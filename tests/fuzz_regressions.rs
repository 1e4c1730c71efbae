//! Every file in `tests/fuzz_regressions/` (minimized inputs that once crashed a fuzz target, and hand-made
//! malformed models) goes through the fuzz targets' own checks, `fuzz/checks.rs`: no panic, stable export.

#[path = "../fuzz/checks.rs"]
#[allow(dead_code)]
mod checks;

#[test]
fn every_regression_file_passes_the_fuzz_checks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fuzz_regressions exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no regression files in {}",
        dir.display()
    );
    for file in files {
        let data = std::fs::read(&file).expect("reading a regression file");
        let name = file.display().to_string();
        let outcome = std::panic::catch_unwind(|| {
            checks::import_export(&data);
            checks::import_passes(&data);
        });
        assert!(outcome.is_ok(), "{name} fails the fuzz checks");
    }
}
