//! The library's conversion session, called directly (no binary): what it writes, what it refuses, and the
//! report it returns.

mod common;

use std::path::PathBuf;

use common::*;
use normshift::convert::{
    ConvertOptions, ConvertReport, Drift, Quiet, Refusal, VerifyOptions, convert,
};
use normshift::runtime::RuntimeKind;
use normshift::verify::{RuntimeChoice, Tolerance};

fn options(passes: &[&str]) -> ConvertOptions {
    ConvertOptions {
        passes: passes.iter().map(|p| p.to_string()).collect(),
        verify: Some(VerifyOptions::default()),
        ..Default::default()
    }
}

fn run(fixture: &str, options: &ConvertOptions) -> (tempfile::TempDir, PathBuf, ConvertReport) {
    let input = fixture_model(fixture);
    let model = normshift::io::load(&input).expect("fixture loads");
    let dir = tempfile::tempdir().expect("temporary folder");
    let output = dir.path().join("out.onnx");
    let report = convert(&model, &input, &output, options, &mut Quiet).expect("conversion runs");
    (dir, output, report)
}

#[test]
fn a_verified_fusion_is_written_with_the_runtime_that_judged_it() {
    let (dir, output, report) = run("bert_post.opset14", &options(&["fuse-layernorm"]));
    assert!(report.written && report.exact);
    assert!(report.refusal.is_none() && report.failing_pass.is_none());
    let v = report.verification.as_ref().expect("verified");
    assert!(v.ok, "{v:?}");
    assert_eq!(v.runtime, RuntimeKind::Tract);
    assert_eq!(v.runs.len(), 2, "two seeded input sets by default");
    assert_eq!(
        v.against, output,
        "the report names the output, not a staged copy"
    );
    assert!(report.passes[0].changes > 0);
    let written = normshift::io::load(&output).expect("the output loads");
    assert!(
        written
            .to_text(Default::default())
            .contains("LayerNormalization")
    );
    assert_eq!(
        files_in(dir.path()),
        ["out.onnx"],
        "nothing else is left beside it"
    );
}

#[test]
fn a_changed_output_writes_nothing_and_names_the_pass_at_fault() {
    // fold-norm-affine moves γ into the next MatMul: exact in real numbers, not bit for bit. With no tolerance
    // at all its rounding is a difference, and the search must find it, not the bit-exact fusion before it.
    let mut o = options(&["fuse-layernorm", "fold-norm-affine"]);
    o.verify = Some(VerifyOptions {
        tolerance: Tolerance {
            rtol: 0.0,
            atol: 0.0,
            ..Default::default()
        },
        ..Default::default()
    });
    let (dir, output, report) = run("gpt2_pre.opset17", &o);
    assert!(!report.written, "{report:?}");
    assert!(matches!(
        report.refusal,
        Some(Refusal::Mismatch {
            failing_pass: Some("fold-norm-affine")
        })
    ));
    assert_eq!(report.failing_pass, Some("fold-norm-affine"));
    assert!(!output.exists());
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn without_verification_nothing_is_run_and_the_report_says_so() {
    let mut o = options(&["fuse-layernorm"]);
    o.verify = None;
    let (_dir, output, report) = run("bert_post.opset14", &o);
    assert!(report.written && output.exists());
    assert!(report.verification.is_none());
    assert!(
        report
            .verification_skipped
            .is_some_and(|why| why.contains("turned off"))
    );
}

#[test]
fn a_function_changing_pass_is_written_with_its_divergence_and_drift() {
    let (_dir, _output, report) = run("bert_post.opset17", &options(&["post-to-pre"]));
    assert!(report.written && !report.exact);
    assert_eq!(report.function_changing(), ["post-to-pre"]);
    let v = report.verification.as_ref().expect("measured");
    assert!(!v.ok && v.worst_rel_l2() > 0.0);
    let Some(Drift::Rows(rows)) = &report.drift else {
        panic!("a drift profile: {:?}", report.drift)
    };
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.rel_l2 > 0.0),
        "{rows:?}"
    );
}

#[test]
fn max_divergence_refuses_a_function_change_beyond_it() {
    let mut o = options(&["post-to-pre"]);
    o.max_divergence = Some(1e-6);
    let (dir, output, report) = run("bert_post.opset17", &o);
    assert!(!report.written && !output.exists());
    let Some(Refusal::Divergence {
        rel_l2,
        max_divergence,
    }) = report.refusal
    else {
        panic!("refused for divergence: {:?}", report.refusal)
    };
    assert!(rel_l2 > max_divergence);
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn the_report_serializes_to_the_documented_fields() {
    let (_dir, _output, report) = run("llama_rms.opset17", &options(&["fuse-rmsnorm"]));
    let json = serde_json::to_value(&report).expect("serializes");
    for key in [
        "input",
        "output",
        "written",
        "exact",
        "passes",
        "file",
        "verification",
        "failing_pass",
        "drift",
    ] {
        assert!(json.get(key).is_some(), "missing `{key}` in {json}");
    }
    assert_eq!(json["verification"]["runtime"], "tract");
    assert_eq!(
        json["file"]["model_bytes"].as_u64(),
        Some(std::fs::metadata(&report.output).unwrap().len())
    );
}

#[test]
fn the_same_file_as_input_and_output_is_refused_unless_forced() {
    let input = fixture_model("bert_post.opset14");
    let model = normshift::io::load(&input).unwrap();
    let err = convert(&model, &input, &input, &options(&[]), &mut Quiet).unwrap_err();
    assert!(
        err.to_string().contains("overwritten only when forced"),
        "{err}"
    );
}

#[test]
fn a_runtime_that_is_not_there_is_an_error_not_a_verdict() {
    // Asking for onnxruntime where none can be found must say how to get it; where one is installed, the
    // same conversion verifies with it.
    let mut o = options(&["fuse-layernorm"]);
    o.verify = Some(VerifyOptions {
        runtime: RuntimeChoice::Only(RuntimeKind::Ort),
        ..Default::default()
    });
    let input = fixture_model("bert_post.opset14");
    let model = normshift::io::load(&input).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    match (
        normshift::runtime::onnxruntime_library(),
        convert(&model, &input, &output, &o, &mut Quiet),
    ) {
        (Ok(_), Ok(report)) => {
            let v = report.verification.expect("verified");
            assert_eq!(v.runtime, RuntimeKind::Ort);
            assert!(v.ok && report.written);
        }
        (Err(_), Err(e)) => {
            assert!(e.to_string().contains("ORT_DYLIB_PATH"), "{e}");
            assert!(!output.exists());
            // Says that the onnxruntime half was skipped (or fails it, where CI requires onnxruntime).
            assert!(!onnxruntime_here(
                "the onnxruntime half of a_runtime_that_is_not_there_is_an_error_not_a_verdict"
            ));
        }
        (lib, got) => panic!("library {lib:?} but conversion {got:?}"),
    }
}
