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
