//! The exact fusion passes on small hand-built graphs, through the CLI: every case is either fused and verified
//! by tract against the original (convert refuses to write otherwise), or left alone — never fused wrongly.

mod common;

use common::forms::*;
use common::*;
use normshift::analysis::{NormForm, NormKind, find_norms};
use normshift::ir::index::GraphIndex;

/// What `convert --passes fuse-layernorm,fuse-rmsnorm` did to a model.
struct Outcome {
    fused: usize,
    /// Norms of the written model: (kind, form, axis).
    norms: Vec<(NormKind, NormForm, i64)>,
    opset: i64,
    text: String,
}

fn fuse(bytes: &[u8], extra: &[&str]) -> Outcome {
    let mut args = vec!["--passes", "fuse-layernorm,fuse-rmsnorm", "--json"];
    args.extend(extra);
    let (out, _dir, output) = convert_bytes(bytes, &args);
    assert!(
        out.status.success(),
        "convert failed: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["verification"]["ok"], true, "{report}");
    let runs = report["passes"].as_array().unwrap();
    let fused = runs
        .iter()
        .map(|r| r["changes"].as_u64().unwrap() as usize)
        .sum();
    let model = normshift::io::load(&output).unwrap();
    let norms = find_norms(&GraphIndex::new(&model.graph))
        .iter()
        .map(|n| (n.kind, n.form, n.axis))
        .collect();
    Outcome {
        fused,
        norms,
        opset: model.opset_version("").unwrap(),
        text: model.to_text(Default::default()),
    }
}

fn assert_fused(f: Form, kind: NormKind, axis: i64) -> Outcome {
    let o = fuse(&norm_graph(f), &[]);
    assert_eq!(o.fused, 1, "{}", o.text);
    assert_eq!(o.norms, vec![(kind, NormForm::Fused, axis)], "{}", o.text);
    o
}

fn assert_left_alone(bytes: Vec<u8>) -> Outcome {
    let o = fuse(&bytes, &[]);
    assert_eq!(o.fused, 0, "{}", o.text);
    assert!(
        o.norms.iter().all(|n| n.1 == NormForm::Decomposed),
        "{}",
        o.text
    );
    o
}

#[test]
fn every_division_form_is_fused() {
    for division in 0..3 {
        assert_fused(Form { division, ..LN }, NormKind::LayerNorm, -1);
        assert_fused(Form { division, ..RMS }, NormKind::RmsNorm, -1);
    }
}

#[test]
fn mul_x_x_is_fused() {
    for form in [LN, RMS] {
        let kind = if form.rms {
            NormKind::RmsNorm
        } else {
            NormKind::LayerNorm
        };
        assert_fused(
            Form {
                square_by_mul: true,
                ..form
            },
            kind,
            -1,
        );
    }
}

#[test]
fn each_opset_version_is_fused_and_the_opset_raised_as_the_op_needs() {
    for opset in [13, 14, 17, 18] {
        let axes_input = opset >= 18;
        let ln = assert_fused(
            Form {
                opset,
                axes_input,
                ..LN
            },
            NormKind::LayerNorm,
            -1,
        );
        assert_eq!(ln.opset, opset.max(17));
        let rms = assert_fused(
            Form {
                opset,
                axes_input,
                ..RMS
            },
            NormKind::RmsNorm,
            -1,
        );
        assert_eq!(rms.opset, 23);
    }
}

#[test]
fn normalization_over_the_last_two_axes_is_fused_with_its_axis() {
    let o = assert_fused(
        Form {
            axes: &[-2, -1],
            scale_dims: &[3, 4],
            ..LN
        },
        NormKind::LayerNorm,
        -2,
    );
    assert!(o.text.contains("axis=-2"), "{}", o.text);
}

#[test]
fn casts_around_fp16_statistics_stay_outside_the_fused_op() {
    let o = assert_fused(
        Form {
            casts: true,
            half: true,
            ..RMS
        },
        NormKind::RmsNorm,
        -1,
    );
    // Statistics still in float32 (Cast in), result back in fp16 (Cast out), then γ applied in fp16 as the
    // pattern did: folding it into the fused op would round differently.
    assert_eq!(o.text.matches("= Cast[").count(), 2, "{}", o.text);
    assert!(
        o.text.contains("= Mul(scaled/cast_out, gamma)"),
        "{}",
        o.text
    );
}

#[test]
fn casts_that_change_nothing_are_dropped() {
    let o = assert_fused(Form { casts: true, ..LN }, NormKind::LayerNorm, -1);
    assert!(!o.text.contains("Cast"), "{}", o.text);
}

#[test]
fn gemma_one_plus_w_folds_into_the_scale() {
    let o = assert_fused(
        Form {
            gemma_scale: true,
            ..RMS
        },
        NormKind::RmsNorm,
        -1,
    );
    // γ = 1.5 everywhere, so the folded scale is 2.5.
    assert!(o.text.contains("[2.5, 2.5, 2.5, 2.5]"), "{}", o.text);
}

#[test]
fn epsilon_as_a_one_element_tensor_is_fused() {
    assert_fused(
        Form {
            eps_dims: &[1, 1],
            ..LN
        },
        NormKind::LayerNorm,
        -1,
    );
}

#[test]
fn what_is_not_a_norm_is_left_alone() {
    assert_left_alone(norm_graph(Form { axes: &[1], ..LN }));
    assert_left_alone(norm_graph(Form {
        eps_dims: &[4],
        ..LN
    }));
}

#[test]
fn keepdims_0_is_left_alone() {
    // Sub(x, mean) with keepdims 0 does not even broadcast, so tract cannot run these: plan without it.
    for form in [LN, RMS] {
        let mut model = normshift::io::load_bytes(
            norm_graph(Form {
                keepdims: 0,
                ..form
            })
            .into(),
            "n".as_ref(),
            ".".as_ref(),
        )
        .unwrap();
        let names = ["fuse-layernorm".to_string(), "fuse-rmsnorm".to_string()];
        let runs =
            normshift::passes::run_pipeline(&mut model, &names, &Default::default()).unwrap();
        assert!(runs.iter().all(|r| r.changes == 0));
    }
}

#[test]
fn a_scale_varying_over_other_axes_stays_a_separate_mul() {
    // γ f32[3, 4] varies along the sequence axis: only the normalization itself is fused; the Mul and the
    // Add after it stay as they were.
    let o = fuse(
        &norm_graph(Form {
            scale_dims: &[3, 4],
            ..LN
        }),
        &[],
    );
    assert_eq!(o.fused, 1);
    assert!(o.text.contains("= Mul(gamma,"), "{}", o.text);
}

#[test]
fn an_intermediate_read_elsewhere_keeps_the_pattern_as_it_is() {
    let o = fuse(&with_leaked_variance(LN), &[]);
    assert_eq!(o.fused, 0);
    assert!(o.text.contains("= ReduceMean["), "{}", o.text);
}

#[test]
fn a_norm_without_scale_gets_ones_of_the_declared_shape() {
    let mut model = normshift::io::load_bytes(norm_graph(RMS).into(), "n".as_ref(), ".".as_ref())
        .unwrap()
        .to_proto()
        .unwrap();
    // Drop the scale: y = Identity(n).
    let graph = model.graph.as_mut().unwrap();
    graph
        .node
        .retain(|n| n.op_type() != "Mul" || n.input[0] != "gamma");
    for n in &mut graph.node {
        if n.op_type() == "Identity" {
            n.input = vec!["n".into()];
        }
    }
    use prost::Message;
    let o = fuse(&model.encode_to_vec(), &[]);
    assert_eq!(o.fused, 1, "{}", o.text);
    assert!(
        o.text.contains("n_scale: f32[4] [1, 1, 1, 1]"),
        "{}",
        o.text
    );
}

#[test]
fn the_ort_target_takes_the_residual_add_into_skip_layernorm() {
    for (fixture, op) in [
        ("gpt2_pre.opset14", "SkipLayerNormalization"),
        ("llama_rms.opset14", "SkipSimplifiedLayerNormalization"),
    ] {
        let bytes = std::fs::read(fixture_model(fixture)).unwrap();
        let o = fuse(&bytes, &["--target", "ort"]);
        assert_eq!(o.fused, 5, "{fixture}");
        // Four norms read a residual sum; the first pre-norm reads the embedding, which is no residual sum.
        assert_eq!(
            o.text.matches(&format!("= com.microsoft.{op}[")).count(),
            4,
            "{}",
            o.text
        );
        assert!(o.text.contains("com.microsoft:1"), "{}", o.text);
    }
}

/// A float16 `LayerNormalization` (γ, β float16 too), as `model.half()` exports write it.
fn half_layernorm() -> Vec<u8> {
    layernorm_in(10)
}

/// A `LayerNormalization` whose input, output, scale and shift are all of float type `elem` (10: float16,
/// 16: bfloat16).
fn layernorm_in(elem: i32) -> Vec<u8> {
    let typed = |mut info: normshift::onnx::ValueInfoProto| {
        if let Some(normshift::onnx::type_proto::Value::TensorType(t)) =
            info.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.elem_type = Some(elem);
        }
        info
    };
    let param = |name: &str, v: f32| {
        let bits = match elem {
            16 => half::bf16::from_f32(v).to_le_bytes(),
            _ => half::f16::from_f32(v).to_le_bytes(),
        };
        normshift::onnx::TensorProto {
            name: Some(name.into()),
            dims: vec![4],
            data_type: Some(elem),
            raw_data: Some(bits.repeat(4).into()),
            ..Default::default()
        }
    };
    tiny_model(|g| {
        g.input = vec![typed(f32_info("x", &[2, 3, 4]))];
        g.output = vec![typed(f32_info("y", &[2, 3, 4]))];
        g.initializer = vec![param("gamma", 1.375), param("beta", 0.3)];
        g.node = vec![with(
            node("LayerNormalization", &["x", "gamma", "beta"], &["y"]),
            vec![
                int("axis", -1),
                normshift::onnx::build::attr_float("epsilon", 1e-5),
            ],
        )];
    })
}

#[test]
fn an_fp16_norm_unfused_then_fused_is_the_same_op_on_the_same_tensors() {
    let original = half_layernorm();
    let text = |bytes: &[u8]| {
        normshift::io::load_bytes(bytes.to_vec().into(), "m.onnx".as_ref(), ".".as_ref())
            .unwrap()
            .to_text(Default::default())
    };
    // Unfused: statistics, scale and shift in float32 (the fused op's stash_type 1), one Cast back at the end;
    // verified by tract (convert refuses to write otherwise).
    let (out, _dir, unfused) = convert_bytes(&original, &["--passes", "unfuse-norms", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for run in report["verification"]["runs"].as_array().unwrap() {
        assert_eq!(run["outputs"][0]["max_abs"].as_f64(), Some(0.0), "{report}");
    }
    let unfused = std::fs::read(unfused).unwrap();
    let spelled = text(&unfused);
    assert!(
        spelled.contains("Cast[to=1](gamma)") && spelled.contains("Cast[to=1](beta)"),
        "{spelled}"
    );
    assert!(
        spelled.contains("y: f16[2, 3, 4] = Cast[to=10]("),
        "{spelled}"
    );
    // Fused again: LayerNormalization on the float16 tensors, no Casts left.
    let o = fuse(&unfused, &[]);
    assert_eq!(o.fused, 1, "{}", o.text);
    assert_eq!(o.text, text(&original));
}

#[test]
fn a_bfloat16_norm_unfused_then_fused_is_the_same_op_on_the_same_tensors() {
    // tract has no bfloat16: onnxruntime judges (skipped, and said so, without it).
    if !onnxruntime_here("a_bfloat16_norm_unfused_then_fused_is_the_same_op_on_the_same_tensors") {
        return;
    }
    let original = layernorm_in(16);
    let (out, _dir, unfused) = convert_bytes(
        &original,
        &["--passes", "unfuse-norms", "--runtime", "ort", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for run in report["verification"]["runs"].as_array().unwrap() {
        assert_eq!(run["outputs"][0]["max_abs"].as_f64(), Some(0.0), "{report}");
    }
    let unfused = std::fs::read(unfused).unwrap();
    let (out, _dir2, fused) = convert_bytes(
        &unfused,
        &["--passes", "fuse-layernorm", "--runtime", "ort"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = |bytes: &[u8]| {
        normshift::io::load_bytes(bytes.to_vec().into(), "m.onnx".as_ref(), ".".as_ref())
            .unwrap()
            .to_text(Default::default())
    };
    assert_eq!(text(&std::fs::read(fused).unwrap()), text(&original));
}
