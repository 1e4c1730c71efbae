//! Calibrated `post-to-pre` (`convert --calibration DIR`): on Post-LN fixtures with trained-like weights, the
//! calibrated mapping is never worse than the plain one on the held-out sets, the result is a Pre-LN model that
//! `pre-to-post` takes (or, when the first unit reads no norm, the plain mapping's `mixed` one), and models the
//! method cannot calibrate are refused naming the unit.

mod common;

use std::path::Path;

use common::*;

/// `count` input sets for `model` in the test-data layout, made by `normshift run` (seeds 0, 1, ...).
fn calibration_sets(model: &Path, dir: &Path, count: usize) {
    for k in 0..count {
        let set = dir.join(format!("test_data_set_{k:02}"));
        let out = normshift(&[
            "run",
            model.to_str().unwrap(),
            "-o",
            set.to_str().unwrap(),
            "--seed",
            &k.to_string(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn calibrated(
    fixture: &str,
    sets: usize,
    extra: &[&str],
) -> (std::process::Output, tempfile::TempDir) {
    calibrated_in(fixture, sets, "post-to-pre", extra)
}

fn calibrated_in(
    fixture: &str,
    sets: usize,
    passes: &str,
    extra: &[&str],
) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("calibration");
    calibration_sets(&fixture_model(fixture), &cal, sets);
    let (model, out_path) = (fixture_model(fixture), dir.path().join("out.onnx"));
    let mut args: Vec<&str> = vec![
        "convert",
        model.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ];
    args.extend(["--passes", passes, "--calibration", cal.to_str().unwrap()]);
    args.extend_from_slice(extra);
    (normshift(&args), dir)
}

/// The calibrated mapping's held-out figures in the report's `calibration` are at least the plain mapping's:
/// on the first output, and after each of the model's `units` units.
fn assert_never_worse(fixture: &str, c: &serde_json::Value, units: usize) {
    let (cal, plain) = (&c["calibrated"]["outputs"][0], &c["plain"]["outputs"][0]);
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(
        f(cal, "token_cosine") >= f(plain, "token_cosine"),
        "{fixture}: {cal} vs {plain}"
    );
    assert!(
        f(cal, "pooled_cosine") >= f(plain, "pooled_cosine"),
        "{fixture}: {cal} vs {plain}"
    );
    assert!(
        f(cal, "rel_l2") <= f(plain, "rel_l2"),
        "{fixture}: {cal} vs {plain}"
    );
    let cosines = |h: &serde_json::Value| -> Vec<f64> {
        h["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["cosine"].as_f64().unwrap())
            .collect()
    };
    let (cu, pu) = (cosines(&c["calibrated"]), cosines(&c["plain"]));
    assert_eq!(cu.len(), units, "{fixture}: {cu:?}");
    assert!(
        cu.iter().zip(&pu).all(|(a, b)| a >= b),
        "{fixture}: {cu:?} vs {pu:?}"
    );
}

#[test]
fn calibrated_is_never_worse_than_plain_on_held_out_sets() {
    for fixture in ["bert_post.opset14", "bert_post.opset17"] {
        let (out, dir) = calibrated(fixture, 12, &["--json"]);
        assert!(out.status.success(), "{fixture}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let c = &report["calibration"];
        assert_eq!(c["held_out_sets"], 3, "{fixture}: every 4th of 12 sets");
        assert_eq!(c["fitted"]["sets"], 9);
        assert_eq!(c["fitted"]["units"].as_array().unwrap().len(), 4);
        // The verification ran on the held-out sets.
        let judged: Vec<&str> = report["verification"]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["inputs"].as_str().unwrap())
            .collect();
        assert_eq!(judged.len(), 3, "{fixture}");
        assert!(
            judged
                .iter()
                .all(|l| l.ends_with("3") || l.ends_with("7") || l.ends_with("11")),
            "{judged:?}"
        );
        assert_never_worse(fixture, c, 4);
        // A true Pre-LN model, which pre-to-post takes.
        let result = dir.path().join("out.onnx");
        let model = normshift::io::load(&result).unwrap();
        let ix = normshift::ir::index::GraphIndex::new(&model.graph);
        assert_eq!(normshift::analysis::analyze(&ix).placement.as_str(), "pre");
        let back = dir.path().join("back.onnx");
        let out = normshift(&[
            "convert",
            result.to_str().unwrap(),
            "-o",
            back.to_str().unwrap(),
            "--passes",
            "pre-to-post",
        ]);
        assert!(out.status.success(), "{fixture}: {}", stderr(&out));
    }
}

#[test]
fn a_scaled_skip_is_refused_naming_the_unit() {
    let (out, dir) = calibrated("deepnorm_post.opset17", 4, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("unit 0 cannot be calibrated") && err.contains("scaled"),
        "{err}"
    );
    assert!(!dir.path().join("out.onnx").exists());
}

#[test]
fn calibration_needs_post_to_pre_and_two_sets() {
    let dir = tempfile::tempdir().unwrap();
    let cal = dir.path().join("calibration");
    let model = fixture_model("bert_post.opset17");
    calibration_sets(&model, &cal, 1);
    let out_path = dir.path().join("out.onnx");
    let run = |passes: &str| {
        normshift(&[
            "convert",
            model.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--passes",
            passes,
            "--calibration",
            cal.to_str().unwrap(),
        ])
    };
    let err = stderr(&run("post-to-pre"));
    assert!(err.contains("needs at least 2"), "{err}");
    calibration_sets(&model, &cal, 2);
    let err = stderr(&run("fuse-layernorm"));
    assert!(err.contains("has no `post-to-pre`"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn passes_around_the_calibrated_one_are_numbered_and_stopped_as_in_one_pipeline() {
    let pipeline = "fuse-layernorm,post-to-pre,fuse-layernorm";
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("ir");
    let dumped = |stop: Option<&str>| {
        let mut extra = vec!["--json", "--dump-ir", dump.to_str().unwrap()];
        extra.extend(stop.map(|s| ["--stop-after", s]).into_iter().flatten());
        let _ = std::fs::remove_dir_all(&dump);
        let (out, _dir) = calibrated_in("bert_post.opset17", 4, pipeline, &extra);
        let mut diffs: Vec<String> = std::fs::read_dir(&dump)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".diff"))
                    .collect()
            })
            .unwrap_or_default();
        diffs.sort();
        (out, diffs)
    };
    let (out, diffs) = dumped(None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        diffs,
        [
            "01-fuse-layernorm.diff",
            "02-post-to-pre.diff",
            "03-fuse-layernorm.diff"
        ]
    );
    // The calibrated pass's dump is what it handed on (the refitted constants), not the plain mapping.
    let text = |name: &str| std::fs::read_to_string(dump.join(name)).unwrap();
    assert_eq!(
        text("02-post-to-pre.after.txt"),
        text("03-fuse-layernorm.before.txt")
    );
    assert!(
        text("02-post-to-pre.diff").contains("+ const"),
        "{}",
        text("02-post-to-pre.diff")
    );
    // Stopping after the calibrated pass still calibrates it, and runs nothing after it.
    let (out, diffs) = dumped(Some("post-to-pre"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(diffs, ["01-fuse-layernorm.diff", "02-post-to-pre.diff"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["passes"].as_array().unwrap().len(), 2);
    assert!(report["calibration"]["fitted"].is_object());
    // Stopping before it leaves nothing to calibrate: refused, not silently skipped.
    let (out, diffs) = dumped(Some("fuse-layernorm"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("stops after `fuse-layernorm`, before `post-to-pre`"),
        "{err}"
    );
    assert!(diffs.is_empty(), "{diffs:?}");
}

#[test]
fn a_first_unit_that_reads_no_norm_is_kept_and_the_units_after_it_are_calibrated() {
    // As torch exports them: ALBERT and ELECTRA project the embedding norm to the hidden width before the
    // first unit; OPT-post has no embedding norm, and writes its MLP projections as Gemm on a 2-D view.
    for fixture in [
        "wild/albert.legacy17",
        "wild/electra.legacy17",
        "wild/opt_post.legacy17",
    ] {
        let (out, dir) = calibrated(fixture, 12, &["--json"]);
        assert!(out.status.success(), "{fixture}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let c = &report["calibration"];
        let kept = c["fitted"]["kept"].as_array().unwrap();
        assert_eq!(kept.len(), 1, "{fixture}: {kept:?}");
        assert_eq!(kept[0]["unit"], 0);
        assert!(
            kept[0]["why"].as_str().unwrap().contains("not a norm"),
            "{fixture}: {kept:?}"
        );
        let fitted: Vec<u64> = c["fitted"]["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["unit"].as_u64().unwrap())
            .collect();
        assert_eq!(fitted, [1, 2, 3], "{fixture}");
        // ALBERT's two layers share their weights: the refitted readers get copies, and the report says so.
        let unshared = c["fitted"]["unshared"].as_array().unwrap();
        assert_eq!(
            !unshared.is_empty(),
            fixture.contains("albert"),
            "{fixture}: {unshared:?}"
        );
        assert!(unshared.iter().all(|u| u["readers"].as_u64() > Some(1)));
        let added = c["fitted"]["added_bytes"].as_i64().unwrap();
        assert_eq!(added > 0, fixture.contains("albert"), "{fixture}: {added}");
        assert_never_worse(fixture, c, 4);
        // The kept unit is the original's, so the stream after it is too.
        let first = c["calibrated"]["units"][0]["cosine"].as_f64().unwrap();
        assert!(first > 0.99999, "{fixture}: {first}");
        // The plain mapping's graph: the kept unit reads no norm, every other one is Pre-LN.
        let model = normshift::io::load(&dir.path().join("out.onnx")).unwrap();
        let ix = normshift::ir::index::GraphIndex::new(&model.graph);
        let placements: Vec<&str> = normshift::analysis::analyze(&ix)
            .residual_units
            .iter()
            .map(|u| u.placement.as_str())
            .collect();
        assert_eq!(placements, ["none", "pre", "pre", "pre"], "{fixture}");
    }
}
