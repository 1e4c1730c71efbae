//! `post-to-pre` and `pre-to-post`: function-changing, so written with their divergence reported; each the exact
//! inverse of the other on the graph (same text form back), and refusals that name the unit.

mod common;

use common::*;

fn text_of(path: &std::path::Path) -> String {
    normshift::io::load(path)
        .unwrap()
        .to_text(Default::default())
}

fn placement_of(path: &std::path::Path) -> String {
    let model = normshift::io::load(path).unwrap();
    let ix = normshift::ir::index::GraphIndex::new(&model.graph);
    normshift::analysis::analyze(&ix)
        .placement
        .as_str()
        .to_string()
}

#[test]
fn each_direction_is_undone_by_the_other() {
    for (fixture, there, back, placement) in [
        ("bert_post.opset14", "post-to-pre", "pre-to-post", "pre"),
        ("bert_post.opset17", "post-to-pre", "pre-to-post", "pre"),
        ("deepnorm_post.opset17", "post-to-pre", "pre-to-post", "pre"),
        ("gpt2_pre.opset14", "pre-to-post", "post-to-pre", "post"),
        ("llama_rms.opset17", "pre-to-post", "post-to-pre", "post"),
    ] {
        let original = std::fs::read(fixture_model(fixture)).unwrap();
        let (out, _dir, moved) = convert_bytes(&original, &["--passes", there, "--json"]);
        assert!(out.status.success(), "{fixture}: {}", stderr(&out));
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        // Written although the outputs differ: the report measures the change.
        assert_eq!(report["written"], true);
        assert_eq!(report["passes"][0]["class"], "function-changing");
        let first = &report["verification"]["runs"][0]["outputs"][0];
        assert!(
            first["rel_l2"].as_f64().unwrap() > 1e-3,
            "{fixture}: {first}"
        );
        assert_eq!(placement_of(&moved), placement, "{fixture}");
        // The drift profile: one row per unit (four units in each fixture), the stream already apart.
        let drift = report["drift"]
            .as_array()
            .unwrap_or_else(|| panic!("{fixture}: {report}"));
        assert_eq!(drift.len(), 4, "{fixture}: {report}");
        assert!(
            drift.iter().all(|r| r["rel_l2"].as_f64().unwrap() > 0.0),
            "{fixture}"
        );

        let (out, _dir2, returned) = convert_bytes(
            &std::fs::read(&moved).unwrap(),
            &["--passes", back, "--no-verify"],
        );
        assert!(out.status.success(), "{fixture}: {}", stderr(&out));
        assert_eq!(
            text_of(&returned),
            text_of(&fixture_model(fixture)),
            "{fixture}"
        );
    }
}

#[test]
fn units_that_cannot_be_mapped_are_refused_by_number() {
    for (fixture, pass, reason) in [
        (
            "neox_parallel.opset17",
            "pre-to-post",
            "unit 0 reads the stream through 2 different norms",
        ),
        ("gpt2_pre.opset17", "post-to-pre", "unit 0 is pre, not post"),
        (
            "gemma2_peri.opset17",
            "pre-to-post",
            "unit 0 is peri, not pre",
        ),
    ] {
        let (out, _dir, written) = convert_bytes(
            &std::fs::read(fixture_model(fixture)).unwrap(),
            &["--passes", pass],
        );
        assert_eq!(out.status.code(), Some(2), "{fixture}");
        assert!(stderr(&out).contains(reason), "{fixture}: {}", stderr(&out));
        assert!(!written.exists());
    }
}

#[test]
fn max_divergence_turns_the_report_into_a_gate() {
    let original = std::fs::read(fixture_model("bert_post.opset17")).unwrap();
    let (out, _dir, written) = convert_bytes(
        &original,
        &["--passes", "post-to-pre", "--max-divergence", "0.1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("above the maximum divergence asked for, 0.1"),
        "{}",
        stderr(&out)
    );
    assert!(!written.exists());
    let (out, _dir, written) = convert_bytes(
        &original,
        &["--passes", "post-to-pre", "--max-divergence", "0.9"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(written.exists());
}

#[test]
fn allow_partial_leaves_the_units_it_cannot_map_and_says_which() {
    let original = std::fs::read(fixture_model("neox_parallel.opset17")).unwrap();
    let (out, _dir, written) = convert_bytes(
        &original,
        &["--passes", "pre-to-post", "--allow-partial", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let run = &report["passes"][0];
    assert_eq!(run["changes"], 0);
    let notes: Vec<&str> = run["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes[0]
            .starts_with("left unit 0 as it is: unit 0 reads the stream through 2 different norms"),
        "{notes:?}"
    );
    assert_eq!(notes.len(), 2);
    // Nothing changed, so it verifies like an exact pass.
    assert_eq!(report["verification"]["ok"], true);
    assert!(written.exists());
}
