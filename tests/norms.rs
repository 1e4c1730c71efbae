//! Norm detection on small hand-built graphs: every decomposed form the exporters write is found, with its
//! axis, ε and parameters, and every strictness rule refuses what is not a norm.

mod common;

use common::forms::*;
use common::*;
use normshift::analysis::{NormForm, NormKind, find_norms};
use normshift::ir::index::GraphIndex;

fn norms_of(bytes: Vec<u8>) -> Vec<normshift::analysis::Norm> {
    let model = normshift::io::load_bytes(bytes.into(), "n.onnx".as_ref(), ".".as_ref()).unwrap();
    let ix = GraphIndex::new(&model.graph);
    find_norms(&ix)
}

fn found(f: Form) -> normshift::analysis::Norm {
    let mut norms = norms_of(norm_graph(f));
    assert_eq!(norms.len(), 1, "expected one norm");
    norms.remove(0)
}

fn refused(f: Form) {
    assert!(norms_of(norm_graph(f)).is_empty(), "must not be a norm");
}

#[test]
fn layernorm_in_every_division_form() {
    for division in 0..3 {
        let n = found(Form { division, ..LN });
        assert_eq!(
            (n.kind, n.form, n.axis),
            (NormKind::LayerNorm, NormForm::Decomposed, -1)
        );
        assert!((n.epsilon - 1e-6).abs() < 1e-12);
        assert!(n.scale.is_some() && n.shift.is_some());
    }
}

#[test]
fn rmsnorm_in_every_division_form() {
    for division in 0..3 {
        let n = found(Form { division, ..RMS });
        assert_eq!((n.kind, n.axis), (NormKind::RmsNorm, -1));
        assert!(n.scale.is_some() && n.shift.is_none());
    }
}

#[test]
fn square_as_mul_x_x() {
    assert_eq!(
        found(Form {
            square_by_mul: true,
            ..LN
        })
        .kind,
        NormKind::LayerNorm
    );
    assert_eq!(
        found(Form {
            square_by_mul: true,
            ..RMS
        })
        .kind,
        NormKind::RmsNorm
    );
}

#[test]
fn axes_as_an_input_at_opset_18_and_positive_axes_with_known_rank() {
    assert_eq!(
        found(Form {
            axes_input: true,
            ..LN
        })
        .axis,
        -1
    );
    assert_eq!(found(Form { axes: &[2], ..RMS }).axis, -1);
}

#[test]
fn normalization_over_the_last_two_axes() {
    let n = found(Form {
        axes: &[-2, -1],
        scale_dims: &[3, 4],
        ..LN
    });
    assert_eq!(n.axis, -2);
}

#[test]
fn casts_to_float32_around_the_statistics_belong_to_the_norm() {
    let n = found(Form { casts: true, ..RMS });
    assert_eq!(
        n.nodes.len(),
        9,
        "Cast, Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul, Cast, Mul"
    );
}

#[test]
fn gemma_one_plus_w_scale() {
    let n = found(Form {
        gemma_scale: true,
        ..RMS
    });
    assert!(n.scale.unwrap().plus_one);
}

#[test]
fn reduction_over_a_non_trailing_axis_is_not_a_norm() {
    refused(Form { axes: &[1], ..LN });
    refused(Form { axes: &[-2], ..RMS });
    refused(Form {
        axes: &[0, 2],
        ..LN
    });
}

#[test]
fn keepdims_0_is_not_a_norm() {
    refused(Form { keepdims: 0, ..LN });
    refused(Form { keepdims: 0, ..RMS });
}

#[test]
fn a_non_scalar_epsilon_is_not_a_norm() {
    refused(Form {
        eps_dims: &[4],
        ..LN
    });
    // One element in any rank is a scalar.
    assert!(
        found(Form {
            eps_dims: &[1, 1],
            ..LN
        })
        .epsilon
            > 0.0
    );
}

#[test]
fn a_scale_broadcasting_over_a_non_normalized_axis_is_not_part_of_the_norm() {
    // gamma f32[3, 4] over axis -1 varies along the sequence axis: the Mul is not a scale, and the shift that
    // follows is not reached either; what remains is the bare normalization.
    let n = found(Form {
        scale_dims: &[3, 4],
        ..LN
    });
    assert!(n.scale.is_none() && n.shift.is_none());
}

#[test]
fn an_intermediate_value_read_elsewhere_is_not_a_norm() {
    assert!(norms_of(with_leaked_variance(LN)).is_empty());
}

#[test]
fn fixtures_have_the_norms_they_were_built_with() {
    for (name, kind, form) in [
        (
            "bert_post.opset14",
            NormKind::LayerNorm,
            NormForm::Decomposed,
        ),
        ("bert_post.opset17", NormKind::LayerNorm, NormForm::Fused),
        (
            "gpt2_pre.opset14",
            NormKind::LayerNorm,
            NormForm::Decomposed,
        ),
        ("gpt2_pre.opset17", NormKind::LayerNorm, NormForm::Fused),
        ("llama_rms.opset14", NormKind::RmsNorm, NormForm::Decomposed),
        ("llama_rms.opset17", NormKind::RmsNorm, NormForm::Decomposed),
    ] {
        let model = normshift::io::load(&fixture_model(name)).unwrap();
        let norms = find_norms(&GraphIndex::new(&model.graph));
        assert_eq!(norms.len(), 5, "{name}");
        assert!(
            norms
                .iter()
                .all(|n| n.kind == kind && n.form == form && n.axis == -1),
            "{name}"
        );
        assert!(
            norms
                .iter()
                .all(|n| (n.epsilon - 1e-5).abs() < 1e-9 && n.scale.is_some()),
            "{name}"
        );
        assert!(
            norms
                .iter()
                .all(|n| n.shift.is_some() == (kind == NormKind::LayerNorm)),
            "{name}"
        );
    }
}

/// `norm_graph(LN)` quantized as onnxruntime's static QDQ does it: ε stored as uint8 behind a
/// `DequantizeLinear`, and a `QuantizeLinear → DequantizeLinear` pair on the variance and on the quotient.
fn quantized_layernorm() -> Vec<u8> {
    use prost::Message;
    let mut proto = normshift::onnx::ModelProto::decode(&norm_graph(LN)[..]).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let u8_scalar = |name: &str, v: u8| normshift::onnx::TensorProto {
        name: Some(name.into()),
        data_type: Some(2),
        raw_data: Some(vec![v].into()),
        ..Default::default()
    };
    // ε = (255 − 0) · 1e-6 / 255.
    g.initializer.retain(|t| t.name() != "eps");
    g.initializer.extend([
        u8_scalar("eps_q", 255),
        filled("eps_scale", &[], 1e-6 / 255.0),
        u8_scalar("zero", 0),
        filled("act_scale", &[], 0.01),
    ]);
    let mut nodes = vec![node(
        "DequantizeLinear",
        &["eps_q", "eps_scale", "zero"],
        &["eps"],
    )];
    for n in std::mem::take(&mut g.node) {
        let pair = n.output[0].clone();
        let quantized = pair == "v" || pair == "n";
        nodes.push(n);
        if quantized {
            // Readers of `pair` read its dequantized copy.
            let (q, dq) = (format!("{pair}_q"), format!("{pair}_dq"));
            nodes.push(node("QuantizeLinear", &[&pair, "act_scale", "zero"], &[&q]));
            nodes.push(node("DequantizeLinear", &[&q, "act_scale", "zero"], &[&dq]));
        }
    }
    for n in &mut nodes {
        let own_pair = matches!(n.op_type(), "QuantizeLinear");
        for input in &mut n.input {
            if !own_pair && (input == "v" || input == "n") {
                input.push_str("_dq");
            }
        }
    }
    g.node = nodes;
    proto.encode_to_vec()
}

#[test]
fn a_norm_quantized_inside_is_read_through_its_quantization() {
    let model = normshift::io::load_bytes(
        quantized_layernorm().into(),
        "q.onnx".as_ref(),
        ".".as_ref(),
    )
    .unwrap();
    // The graph as it is has no norm: a QuantizeLinear sits between the variance and ε.
    assert!(find_norms(&GraphIndex::new(&model.graph)).is_empty());
    // Read through the pairs, it is the LayerNorm, ε dequantized, with its steps quantized.
    let a = normshift::analysis::analyze_graph(&model.graph);
    assert_eq!(a.norms.len(), 1);
    let n = &a.norms[0].norm;
    assert_eq!(
        (n.kind, n.form, n.axis),
        (NormKind::LayerNorm, NormForm::QuantizedInside, -1)
    );
    assert!((n.epsilon - 1e-6).abs() < 1e-12, "{}", n.epsilon);
    // The fusion leaves it, saying why.
    let mut model = model;
    let pass = normshift::passes::by_name("fuse-layernorm").unwrap();
    let run = normshift::passes::run_one(&mut model, pass.as_ref(), &Default::default()).unwrap();
    assert_eq!(run.changes, 0);
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("QuantizeLinear/DequantizeLinear")),
        "{:?}",
        run.notes
    );
}
