//! `fold-norm-affine`: the scale and shift of a norm move into the linear layers reading it, verified by tract
//! through `convert`; a weight shared with another layer is copied, never changed in place.

mod common;

use common::*;
use normshift::onnx::GraphProto;

fn convert(bytes: &[u8]) -> (serde_json::Value, String) {
    let (out, _dir, output) = convert_bytes(bytes, &["--passes", "fold-norm-affine", "--json"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), stdout(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["verification"]["ok"], true, "{report}");
    let text = normshift::io::load(&output)
        .unwrap()
        .to_text(Default::default());
    (report, text)
}

#[test]
fn pre_norms_of_the_fixtures_fold_into_their_projections() {
    for fixture in [
        "gpt2_pre.opset14",
        "gpt2_pre.opset17",
        "llama_rms.opset17",
        "neox_parallel.opset17",
    ] {
        let bytes = std::fs::read(fixture_model(fixture)).unwrap();
        let (report, text) = convert(&bytes);
        // Four pre-norms feed projections; the final norm feeds the graph output and stays as it is.
        assert_eq!(report["passes"][0]["changes"], 4, "{fixture}: {report}");
        assert_eq!(
            report["passes"][0]["notes"].as_array().unwrap().len(),
            1,
            "{fixture}"
        );
        assert!(text.contains("_folded_weight"), "{fixture}");
    }
}

/// y = LN(x) · W + b, z = LN(x) · W2, and u = x · W (W shared with a layer that does not read the norm).
fn tied() -> Vec<u8> {
    tiny_model(|g: &mut GraphProto| {
        g.input = vec![f32_info("x", &[2, 3, 4])];
        g.output = vec![
            f32_info("y", &[2, 3, 5]),
            f32_info("z", &[2, 3, 2]),
            f32_info("u", &[2, 3, 5]),
        ];
        let w: Vec<f32> = (0..20).map(|i| (i as f32 - 9.5) / 7.0).collect();
        let w2: Vec<f32> = (0..8).map(|i| (i as f32 - 3.0) / 3.0).collect();
        g.initializer = vec![
            f32_tensor("gamma", &[4], &[0.5, 1.5, -2.0, 1.0]),
            f32_tensor("beta", &[4], &[0.1, -0.2, 0.3, 0.0]),
            f32_tensor("W", &[4, 5], &w),
            f32_tensor("b", &[5], &[1.0, 2.0, 3.0, 4.0, 5.0]),
            f32_tensor("W2", &[4, 2], &w2),
        ];
        let mut ln = node("LayerNormalization", &["x", "gamma", "beta"], &["n"]);
        ln.attribute = vec![forms::int("axis", -1)];
        g.node = vec![
            ln,
            node("MatMul", &["n", "W"], &["p"]),
            node("Add", &["p", "b"], &["y"]),
            node("MatMul", &["n", "W2"], &["z"]),
            node("MatMul", &["x", "W"], &["u"]),
        ];
    })
}

#[test]
fn scale_and_shift_fold_and_a_shared_weight_is_copied() {
    let (report, text) = convert(&tied());
    assert_eq!(report["passes"][0]["changes"], 1, "{report}");
    // The norm is bare (unit scale, no shift); both projections read new weights; W still serves `u`.
    let body: Vec<&str> = text.lines().filter(|l| l.contains(" = ")).collect();
    assert_eq!(
        body,
        [
            "n = LayerNormalization(x, n_unit_scale)",
            "p = MatMul(n, p_folded_weight)",
            // b' = b + β·W, merged into the layer's own bias.
            "y: f32[2, 3, 5] = Add(p, p_folded_bias)",
            "z/MatMul = MatMul(n, z_folded_weight)",
            // W2's layer had no bias: β·W2 is added after it.
            "z: f32[2, 3, 2] = Add(z/MatMul, z_folded_bias)",
            "u: f32[2, 3, 5] = MatMul(x, W)",
        ],
        "{text}"
    );
    // W' = diag(γ)·W2: W2's first row (-1, -0.667) scaled by γ0 = 0.5.
    assert!(
        text.contains("z_folded_weight: f32[4, 2] [-0.5, -0.33333334,"),
        "{text}"
    );
}

#[test]
fn norms_feeding_quantized_weights_are_left_alone_saying_so() {
    // onnxruntime-genai's int4 export: every norm feeds MatMulNBits (4-bit blocks), which no exact fold can
    // change. Planned without running (tract cannot run GroupQueryAttention).
    let mut model =
        normshift::io::load(&fixture("wild/llama.genai_int4").join("model.onnx")).unwrap();
    let pass = normshift::passes::by_name("fold-norm-affine").unwrap();
    let run = normshift::passes::run_one(&mut model, pass.as_ref(), &Default::default()).unwrap();
    assert_eq!(run.changes, 0);
    assert_eq!(run.notes.len(), 5, "{:?}", run.notes);
    for note in &run.notes {
        assert!(
            note.contains("MatMulNBits") && note.contains("quantized weights"),
            "{note}"
        );
    }
}

#[test]
fn dynamic_int8_weights_are_neither_folded_into_nor_centred() {
    // onnxruntime's quantize_dynamic on a Pre-LN GPT-2: the projections are MatMulInteger.
    let model = normshift::io::load(&fixture("wild/gpt2.dynamic_int8").join("model.onnx")).unwrap();
    let run = |name: &str| {
        let pass = normshift::passes::by_name(name).unwrap();
        normshift::passes::run_one(&mut model.clone(), pass.as_ref(), &Default::default())
    };
    let fold = run("fold-norm-affine").unwrap();
    assert_eq!(fold.changes, 0);
    // The four pre-norms each feed a DynamicQuantizeLinear → MatMulInteger (the final norm feeds the output).
    let quantized = fold
        .notes
        .iter()
        .filter(|n| n.contains("MatMulInteger") && n.contains("quantized weights"))
        .count();
    assert_eq!(quantized, 4, "{:?}", fold.notes);
    let err = run("layernorm-to-rmsnorm").unwrap_err().to_string();
    assert!(
        err.contains("writes the stream with quantized weights"),
        "{err}"
    );
}
