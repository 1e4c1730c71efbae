//! `layernorm-to-rmsnorm` (with `fold-norm-affine` before it): Pre-LN fixtures become Pre-RMSNorm models that
//! tract verifies equal to the original; what the rewrite cannot keep exact is refused, naming why.

mod common;

use common::*;

fn convert(fixture: &str, passes: &str) -> (std::process::Output, Option<normshift::Model>) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    let out = normshift(&[
        "convert",
        fixture_model(fixture).to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--passes",
        passes,
    ]);
    let model = output
        .exists()
        .then(|| normshift::io::load(&output).unwrap());
    (out, model)
}

#[test]
fn pre_ln_fixtures_become_pre_rmsnorm_and_verify() {
    for fixture in [
        "gpt2_pre.opset14",
        "gpt2_pre.opset17",
        "neox_parallel.opset17",
    ] {
        for passes in [
            "layernorm-to-rmsnorm",
            "fold-norm-affine,layernorm-to-rmsnorm",
        ] {
            let (out, model) = convert(fixture, passes);
            assert!(out.status.success(), "{fixture} {passes}: {}", stderr(&out));
            let model = model.unwrap();
            let ix = normshift::ir::index::GraphIndex::new(&model.graph);
            let a = normshift::analysis::analyze(&ix);
            assert_eq!(
                (a.placement.as_str(), a.norm.as_str()),
                ("pre", "rmsnorm"),
                "{fixture} {passes}"
            );
            let text = model.to_text(Default::default());
            assert_eq!(
                text.matches("RMSNormalization").count(),
                5,
                "{fixture} {passes}: {text}"
            );
            assert!(!text.contains("ReduceMean"), "{fixture} {passes}: {text}");
            assert_eq!(model.opset_version(""), Some(23));
        }
    }
}

#[test]
fn what_cannot_stay_exact_is_refused_with_the_reason() {
    for (fixture, reason) in [
        ("bert_post.opset17", "placement is post"),
        ("deepnorm_post.opset17", "placement is post"),
        ("gemma2_peri.opset17", "placement is peri"),
        ("llama_rms.opset17", "its norms are RMSNorms already"),
    ] {
        let (out, model) = convert(fixture, "layernorm-to-rmsnorm");
        assert_eq!(out.status.code(), Some(2), "{fixture}");
        assert!(stderr(&out).contains(reason), "{fixture}: {}", stderr(&out));
        assert!(model.is_none());
    }
}
