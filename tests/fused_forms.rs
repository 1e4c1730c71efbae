//! The graphs runtimes' own tools write: `models/wild` holds exports made by onnxruntime's transformers
//! optimizer, onnxruntime-genai's builder, torch at opset 23, and families beyond the corpus (ALBERT, ELECTRA,
//! OPT-post, DINOv2's LayerScale), with what each is by construction in `expected.json`.
//!
//! Two rules: analysis finds the architecture in every one of them, and **every exact pass keeps the
//! analysis** — `analyze(P(M))` reports the placement, units, branches and norms of `analyze(M)` — on every
//! fixture, for both targets. `NORMSHIFT_MODEL_DIRS` (folders of model folders, `:`-separated) adds more models
//! to the second rule; `.ci/run` points it at `../shared/corpus` and `../shared/wild`.

mod common;

use std::path::{Path, PathBuf};

use normshift::analysis::{Analysis, NormSummary, analyze, analyze_model};
use normshift::ir::index::GraphIndex;
use normshift::passes::{PassClass, PassContext, PassError, Target, catalogue, run_one};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The model folders directly inside `dir` (those holding a `model.onnx`), sorted.
fn model_folders(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.join("model.onnx").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn analysis_of(model: &normshift::Model) -> Analysis {
    analyze(&GraphIndex::new(&model.graph))
}

/// The main graph's analysis and every subgraph body's, by path (`""` for the main graph).
fn graphs_of(model: &normshift::Model) -> Vec<(String, Analysis)> {
    let a = analyze_model(model).expect("bodies import");
    let mut graphs = vec![(String::new(), a.main)];
    graphs.extend(a.subgraphs.into_iter().map(|b| (b.path, b.analysis)));
    graphs
}

/// A unit as compared: placement, branch kinds, its norms as the JSON report lists them, skip scale.
type UnitShape = (String, Vec<String>, Vec<String>, Option<String>);

/// What the invariant compares: everything analysis says about structure, nothing about how a norm is written.
#[derive(Debug, PartialEq)]
struct Structure {
    placement: String,
    norm: String,
    parallel: bool,
    embedding_norm: bool,
    final_norm: bool,
    /// Per unit: placement, branch kinds, (norm index, role) as the JSON report lists them, skip scale.
    units: Vec<UnitShape>,
    /// Per norm, in graph order: kind, role, unit, first axis, ε (as f32, the precision files store).
    norms: Vec<(String, String, Option<usize>, i64, String)>,
}

fn structure(a: &Analysis, kinds: bool) -> Structure {
    let json = serde_json::to_value(a).expect("analysis serializes");
    let units = json["residual_units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| {
            let strings = |key: &str| -> Vec<String> {
                u[key]
                    .as_array()
                    .map(|v| v.iter().map(|x| x.to_string()).collect())
                    .unwrap_or_default()
            };
            (
                u["placement"].to_string(),
                strings("branches"),
                strings("norms"),
                u.get("skip_scale").map(|s| s.to_string()),
            )
        })
        .collect();
    let kind = |k: String| if kinds { k } else { "-".to_string() };
    Structure {
        placement: a.placement.to_string(),
        norm: kind(a.norm.to_string()),
        parallel: a.parallel,
        embedding_norm: a.embedding_norm,
        final_norm: a.final_norm,
        units,
        norms: a
            .norms
            .iter()
            .map(|n| {
                (
                    kind(n.norm.kind.to_string()),
                    n.role.to_string(),
                    n.unit,
                    n.norm.axis,
                    format!("{:e}", n.norm.epsilon as f32),
                )
            })
            .collect(),
    }
}

#[test]
fn models_written_by_runtime_tools_analyse_as_their_architecture() {
    let dir = models_dir().join("wild");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("models/wild/expected.json"),
    )
    .expect("expected.json is JSON");
    let folders = model_folders(&dir);
    assert!(folders.len() >= 10, "the wild fixtures are missing");
    let mut wrong = Vec::new();
    for folder in folders {
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        let want = &expected[&name];
        assert!(want.is_object(), "{name} has no entry in expected.json");
        let model = normshift::io::load(&folder.join("model.onnx")).expect("loads");
        let whole = analyze_model(&model).expect("bodies import");
        // A merged decoder's figures are those of each branch (`in_subgraphs`); `norms_total` counts both.
        let in_subgraphs = want["in_subgraphs"] == true;
        if in_subgraphs != whole.summarised_by_subgraphs {
            wrong.push(format!(
                "{name}: summarised by its subgraphs is {}, should be {in_subgraphs}",
                whole.summarised_by_subgraphs
            ));
            continue;
        }
        if let Some(total) = want["norms_total"].as_u64() {
            let found = whole.main.norms.len()
                + whole
                    .subgraphs
                    .iter()
                    .map(|b| b.analysis.norms.len())
                    .sum::<usize>();
            if found as u64 != total {
                wrong.push(format!(
                    "{name}: {found} norms in the whole file, the architecture has {total}"
                ));
            }
        }
        let a = match in_subgraphs {
            true => {
                &whole
                    .subgraphs
                    .iter()
                    .find(|b| b.analysis.unit_count > 0)
                    .expect("a body with units")
                    .analysis
            }
            false => &whole.main,
        };
        let internal = a
            .norms
            .iter()
            .filter(|n| n.role.as_str() == "internal")
            .count();
        // Per unit, its branch kinds: `attention+mlp` for a parallel unit (sorted: order inside a unit is not
        // significant).
        let branches: Vec<String> = a
            .residual_units
            .iter()
            .map(|u| {
                let mut kinds: Vec<&str> = u.branches.iter().map(|b| b.kind.as_str()).collect();
                kinds.sort_unstable();
                kinds.join("+")
            })
            .collect();
        let found = serde_json::json!({
            "placement": a.placement.as_str(),
            "norm": a.norm.as_str(),
            "units": a.unit_count,
            "parallel": a.parallel,
            "embedding_norm": a.embedding_norm,
            "final_norm": a.final_norm,
            "norms": a.norm_count,
            "internal": internal,
            "branches": branches,
        });
        for key in [
            "placement",
            "norm",
            "units",
            "parallel",
            "embedding_norm",
            "final_norm",
            "norms",
            "internal",
            "branches",
        ] {
            if !truth_accepts(&want[key], &found[key]) {
                wrong.push(format!(
                    "{name}: {key} is {}, the architecture has {}",
                    found[key], want[key]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Whether a truth value of `expected.json` accepts what analysis found: a list of scalars where a scalar is
/// found means any of them; lists are compared entry by entry; `a+b` names a parallel unit's kinds in any order.
fn truth_accepts(want: &serde_json::Value, found: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, found) {
        (Value::Array(options), found) if !found.is_array() => {
            options.iter().any(|w| truth_accepts(w, found))
        }
        (Value::Array(w), Value::Array(f)) => {
            w.len() == f.len() && w.iter().zip(f).all(|(w, f)| truth_accepts(w, f))
        }
        (Value::String(w), Value::String(f)) if w.contains('+') => {
            let mut w: Vec<&str> = w.split('+').collect();
            w.sort_unstable();
            w.join("+") == *f
        }
        (w, f) => w == f,
    }
}

/// Runs every exact pass, for both targets, on every model in `folders` and returns what broke the rule.
fn invariant_violations(folders: &[PathBuf]) -> (Vec<String>, usize) {
    let mut broken = Vec::new();
    let mut checked = 0;
    for folder in folders {
        let Ok(model) = normshift::io::load(&folder.join("model.onnx")) else {
            continue;
        };
        let before = graphs_of(&model);
        for pass in catalogue().iter().filter(|p| p.class() == PassClass::Exact) {
            // The one exact pass whose purpose is to change a norm's kind.
            let kinds = pass.name() != "layernorm-to-rmsnorm";
            for target in [Target::Onnx, Target::Ort] {
                let cx = PassContext {
                    target,
                    ..Default::default()
                };
                let mut after = model.clone();
                let label = format!("{} {} --target {target:?}", folder.display(), pass.name());
                match run_one(&mut after, pass.as_ref(), &cx) {
                    Ok(_) => {}
                    Err(PassError::Refused { .. }) => continue,
                    Err(e) => {
                        broken.push(format!("{label}: {e}"));
                        continue;
                    }
                }
                checked += 1;
                let structures = |graphs: &[(String, Analysis)]| -> Vec<(String, Structure)> {
                    graphs
                        .iter()
                        .map(|(path, a)| (path.clone(), structure(a, kinds)))
                        .collect()
                };
                let (want, got) = (structures(&before), structures(&graphs_of(&after)));
                if want != got {
                    broken.push(format!(
                        "{label}: analysis changed\n  before {want:?}\n  after  {got:?}"
                    ));
                }
            }
        }
    }
    (broken, checked)
}

#[test]
fn every_exact_pass_keeps_the_analysis_of_every_fixture() {
    let mut folders = model_folders(&models_dir());
    folders.extend(model_folders(&models_dir().join("wild")));
    let (broken, checked) = invariant_violations(&folders);
    assert!(checked > 300, "only {checked} pass runs were checked");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The same rule on the models `NORMSHIFT_MODEL_DIRS` names (the corpus, in CI); without it there is nothing to
/// check and the test says so.
#[test]
fn every_exact_pass_keeps_the_analysis_of_the_named_model_dirs() {
    let Ok(dirs) = std::env::var("NORMSHIFT_MODEL_DIRS") else {
        eprintln!(
            "SKIPPED every_exact_pass_keeps_the_analysis_of_the_named_model_dirs: NORMSHIFT_MODEL_DIRS is not set"
        );
        return;
    };
    let folders: Vec<PathBuf> = dirs
        .split(':')
        .filter(|d| !d.is_empty())
        .flat_map(|d| model_folders(Path::new(d)))
        .collect();
    assert!(
        !folders.is_empty(),
        "NORMSHIFT_MODEL_DIRS names no model folders"
    );
    let (broken, checked) = invariant_violations(&folders);
    println!(
        "{checked} pass runs on {} models kept the analysis",
        folders.len()
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn fused_and_unfused_forms_read_alike() {
    // onnxruntime's optimizer output, unfused, is the same architecture with Adds and decomposed norms.
    let model = normshift::io::load(&models_dir().join("wild/bert.ortopt/model.onnx")).unwrap();
    let a = analysis_of(&model);
    assert_eq!(a.norm, NormSummary::LayerNorm);
    assert!(
        a.residual_units
            .iter()
            .all(|u| u.fused_norm.is_some() && u.sum.is_none())
    );
    let embedding = a
        .norms
        .iter()
        .find(|n| n.role.as_str() == "embedding")
        .unwrap();
    assert!(
        embedding.norm.embedding,
        "the embedding norm is EmbedLayerNormalization's"
    );
}

#[test]
fn a_fused_norm_without_epsilon_has_its_ops_default() {
    // onnxruntime's Skip and Embed norms default to 1e-12, not LayerNormalization's 1e-5.
    let mut model = normshift::io::load(&models_dir().join("wild/bert.ortopt/model.onnx")).unwrap();
    let nodes: Vec<_> = model.graph.graph.node_indices().collect();
    for n in nodes {
        if let normshift::ir::NodeKind::Op(op) = &mut model.graph.graph[n].kind {
            op.proto.attribute.retain(|a| a.name() != "epsilon");
        }
    }
    let a = analysis_of(&model);
    assert_eq!(a.norms.len(), 5);
    for n in &a.norms {
        assert_eq!(n.norm.epsilon, 1e-12, "{:?}", n.role);
    }
}

fn wild(name: &str) -> normshift::Model {
    normshift::io::load(&models_dir().join("wild").join(name).join("model.onnx")).unwrap()
}

fn run(model: &mut normshift::Model, pass: &str, target: Target) -> normshift::passes::PassRun {
    let pass = normshift::passes::by_name(pass).unwrap();
    let cx = PassContext {
        target,
        ..Default::default()
    };
    run_one(model, pass.as_ref(), &cx).unwrap()
}

#[test]
fn unfusing_onnxruntime_output_keeps_node_names_unique() {
    for name in ["bert.ortopt", "gpt2.ortopt", "llama.genai_fp32"] {
        let mut model = wild(name);
        let run = run(&mut model, "unfuse-norms", Target::Onnx);
        assert_eq!(run.changes, 5, "{name}: every fused norm is expanded");
        let mut names: Vec<String> = model
            .graph
            .graph
            .node_weights()
            .filter_map(|n| n.op().map(|op| op.proto.name().to_string()))
            .filter(|n| !n.is_empty())
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "{name}: two nodes share a name");
        let ops: Vec<String> = model
            .graph
            .graph
            .node_weights()
            .filter_map(|n| n.op().map(|op| op.op_type().to_string()))
            .collect();
        assert!(
            !ops.iter().any(|o| o.contains("LayerNormalization")),
            "{name}: a fused norm is left"
        );
    }
}

#[test]
fn placement_rewrites_work_on_fused_and_reshaped_streams() {
    // onnxruntime's Post-LN BERT (Skip ops that do not write their sums, the embedding in one op) and OPT-post
    // (the stream flattened to 2-D around each MLP): post-to-pre moves every skip, pre-to-post moves it back.
    for name in ["bert.ortopt", "opt_post.legacy17"] {
        let original = wild(name);
        let mut model = original.clone();
        let forward = run(&mut model, "post-to-pre", Target::Onnx);
        let pre = analysis_of(&model);
        assert!(
            pre.residual_units
                .iter()
                .skip(1)
                .all(|u| u.placement.as_str() == "pre"),
            "{name}: {:?}",
            pre.residual_units
                .iter()
                .map(|u| u.placement)
                .collect::<Vec<_>>()
        );
        assert_eq!(pre.unit_count, 4, "{name}");
        let back = run(&mut model, "pre-to-post", Target::Onnx);
        assert_eq!(forward.changes, back.changes, "{name}");
        assert_eq!(
            structure(&analysis_of(&model), true),
            structure(&analysis_of(&original), true),
            "{name}: pre-to-post gives the Post-LN model back"
        );
    }
}

#[test]
fn layerscale_folds_into_the_projection_for_pre_rmsnorm() {
    let mut model = wild("dinov2.legacy17");
    let run = run(&mut model, "layernorm-to-rmsnorm", Target::Onnx);
    assert!(run.changes > 0);
    let a = analysis_of(&model);
    assert_eq!(
        (a.placement.as_str(), a.norm.as_str(), a.unit_count),
        ("pre", "rmsnorm", 4)
    );
    // No per-channel Mul is left between a branch and the stream.
    for u in &a.residual_units {
        let ix = GraphIndex::new(&model.graph);
        for b in &u.branches {
            assert!(ix.produced_by(b.output, "Mul").is_none());
        }
    }
}

#[test]
fn every_norm_of_a_residual_sum_gets_a_skip_op_or_a_reason() {
    // Units 1..3 read the previous unit's sum through their pre norm and the final norm reads the last one:
    // four norms of a residual sum in each model. The fixture's ranks are declared, so all four become Skip
    // ops; DINOv2's are derived (through its patch `Conv`, whose rank is its input's), so all four do too.
    let fixture = normshift::io::load(&models_dir().join("gpt2_pre.opset17/model.onnx")).unwrap();
    for (name, mut model, want_skip_ops) in [
        ("gpt2_pre.opset17", fixture, 4),
        ("dinov2.legacy17", wild("dinov2.legacy17"), 4),
    ] {
        let run = run(&mut model, "fuse-layernorm", Target::Ort);
        let skip_ops = model
            .graph
            .graph
            .node_weights()
            .filter(|n| {
                n.op()
                    .is_some_and(|op| op.op_type() == "SkipLayerNormalization")
            })
            .count();
        let noted = run
            .notes
            .iter()
            .filter(|n| n.contains("residual sum"))
            .count();
        assert_eq!(
            (skip_ops, skip_ops + noted),
            (want_skip_ops, 4),
            "{name}: {:?}",
            run.notes
        );
    }
}

#[test]
fn a_qdq_layernorm_unfused_and_fused_again_keeps_its_quantization_around_it() {
    // onnxruntime's static QDQ at opset 17: DequantizeLinear → LayerNormalization (scale and bias behind their
    // own DequantizeLinear) → QuantizeLinear.
    let original = wild("bert.qdq_s8");
    let mut model = original.clone();
    assert_eq!(run(&mut model, "unfuse-norms", Target::Onnx).changes, 5);
    assert_eq!(run(&mut model, "fuse-layernorm", Target::Onnx).changes, 5);
    let text = |m: &normshift::Model| m.to_text(Default::default());
    assert_eq!(text(&model), text(&original));
}

#[test]
fn placement_rewrites_move_skips_across_a_quantized_stream_and_back_exactly() {
    // Static QDQ: the skip that moves reads the dequantized value, as the other readers of that activation do,
    // so no QuantizeLinear changes what it quantizes, and moving it back gives the original graph.
    let original = wild("bert.qdq_s8");
    let mut model = original.clone();
    let forward = run(&mut model, "post-to-pre", Target::Onnx);
    assert_eq!(forward.changes, 4);
    assert!(
        forward
            .notes
            .iter()
            .any(|n| n.contains("dequantized value")),
        "{:?}",
        forward.notes
    );
    let pre = graphs_of(&model);
    assert_eq!(pre[0].1.placement.as_str(), "pre");
    let quantizers = |m: &normshift::Model| {
        let ix = GraphIndex::new(&m.graph);
        let mut q: Vec<String> = ix
            .ops()
            .iter()
            .filter(|&&n| {
                m.graph.graph[n]
                    .op()
                    .is_some_and(|op| op.op_type() == "QuantizeLinear")
            })
            .map(|&n| m.graph.value(ix.inputs(n)[0].unwrap()).name.clone())
            .collect();
        q.sort();
        q
    };
    assert_eq!(
        quantizers(&model),
        quantizers(&original),
        "every pair quantizes what it did"
    );
    run(&mut model, "pre-to-post", Target::Onnx);
    let text = |m: &normshift::Model| m.to_text(Default::default());
    assert_eq!(text(&model), text(&original));
}

#[test]
fn a_float16_bert_fuses_for_onnxruntime_judged_at_float16_resolution() {
    // onnxconverter-common's float16 BERT (float32 inputs and outputs, float16 inside). onnxruntime runs most
    // float16 ops of the unfused graph in float32 on CPU but its fused SkipLayerNormalization in float16: the
    // two differ by float16 roundings, so the outputs are judged at a few roundings of float16 although they
    // are float32.
    if !common::onnxruntime_here(
        "a_float16_bert_fuses_for_onnxruntime_judged_at_float16_resolution",
    ) {
        return;
    }
    let folder = models_dir().join("wild/bert.fp16_converter");
    let path = folder.join("model.onnx");
    let model = normshift::api::load(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let request = normshift::api::ConvertRequest {
        passes: vec!["fuse-layernorm".into()],
        target: Target::Ort,
        inputs: normshift::api::InputsRequest {
            inputs: Some(folder.join("test_data_set_0")),
            ..Default::default()
        },
        ..Default::default()
    };
    let report = normshift::api::convert(
        &model,
        &path,
        &dir.path().join("out.onnx"),
        &request,
        &mut normshift::convert::Quiet,
    )
    .unwrap();
    assert!(report.written, "{:?}", report.refusal);
    let verification = report.verification.unwrap();
    assert!(verification.tolerance.computed_in_half.is_some());
    let worst = verification.worst().unwrap();
    let raised = worst
        .raised_tolerance
        .expect("raised to float16's resolution");
    assert!(worst.max_abs <= raised.atol, "{worst:?}");
    assert!(report.passes[0].changes > 0);
}
