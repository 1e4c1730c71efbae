//! Which runtime follows the ONNX specification on quantized models, shown on minimal models built here:
//!
//! * `QuantizeLinear` on exact rounding ties at scale float32(10/255) (a typical uint8 activation scale): the
//!   specification divides, rounds half to even and saturates; onnxruntime does exactly that, tract 0.23.9
//!   multiplies by float32(1/scale) = 25.5 (1/scale is 25.4999995…) and lands one step off on some ties;
//! * `DequantizeLinear → Softmax → QuantizeLinear`: tract turns the chain into a 256-entry lookup table as if
//!   Softmax were element-wise, so every probability comes out 1.0; the same chain through Sigmoid (which is
//!   element-wise) is exact in both.
//!
//! Then what normshift does about it: `auto` runs onnxruntime first on models that quantize activations, and
//! a report judged by tract on such a model says how tract departs from the specification.

mod common;

use common::*;
use normshift::analysis::quantized::activation_quantization;
use normshift::onnx::{AttributeProto, TensorProto, attribute_proto::AttributeType};
use normshift::runtime::{ModelSource, Named, RuntimeKind, TensorData, Values};

/// A typical uint8 activation scale: its reciprocal is not exact in float32.
const SCALE: f32 = 10.0 / 255.0;

fn scalar(name: &str, data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(data_type),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

fn f32_scalar(name: &str, v: f32) -> TensorProto {
    scalar(name, 1, v.to_le_bytes().to_vec())
}

/// `info` of element type `elem` (2: uint8, 1: float).
fn typed(name: &str, elem: i32, dims: &[i64]) -> normshift::onnx::ValueInfoProto {
    let mut v = f32_info(name, dims);
    if let Some(normshift::onnx::type_proto::Value::TensorType(t)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(elem);
    }
    v
}

/// `q = QuantizeLinear(x, SCALE, 0 as uint8)` over `n` floats.
fn quantize_model(n: i64) -> Vec<u8> {
    tiny_model(|g| {
        g.node = vec![node("QuantizeLinear", &["x", "scale", "zero"], &["q"])];
        g.initializer = vec![f32_scalar("scale", SCALE), scalar("zero", 2, vec![0])];
        g.input = vec![typed("x", 1, &[n])];
        g.output = vec![typed("q", 2, &[n])];
    })
}

/// `x → Q(uint8, 1/16, zero point 128) → DQ → op → Q(uint8, 1/255) → DQ → y`, over `[2, 8]`: the chain static
/// QDQ puts around an attention Softmax.
fn chain_model(op: &str) -> Vec<u8> {
    let mut softmax = node(op, &["dx"], &["p"]);
    if op == "Softmax" {
        softmax.attribute = vec![AttributeProto {
            name: Some("axis".into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(-1),
            ..Default::default()
        }];
    }
    tiny_model(|g| {
        g.node = vec![
            node("QuantizeLinear", &["x", "in_scale", "in_zero"], &["qx"]),
            node("DequantizeLinear", &["qx", "in_scale", "in_zero"], &["dx"]),
            softmax,
            node("QuantizeLinear", &["p", "out_scale", "out_zero"], &["qp"]),
            node("DequantizeLinear", &["qp", "out_scale", "out_zero"], &["y"]),
        ];
        g.initializer = vec![
            f32_scalar("in_scale", 1.0 / 16.0),
            scalar("in_zero", 2, vec![128]),
            f32_scalar("out_scale", 1.0 / 255.0),
            scalar("out_zero", 2, vec![0]),
        ];
        g.input = vec![typed("x", 1, &[2, 8])];
        g.output = vec![typed("y", 1, &[2, 8])];
    })
}

fn model_of(bytes: &[u8]) -> normshift::Model {
    normshift::io::load_bytes(bytes.to_vec().into(), "m.onnx".as_ref(), ".".as_ref()).unwrap()
}

/// `bytes` run in `kind` on `x`: the first output.
fn run_in(kind: RuntimeKind, bytes: &[u8], x: TensorData) -> TensorData {
    let model = model_of(bytes);
    let source = ModelSource::new(&model, ".".as_ref(), "m.onnx").unwrap();
    let inputs = [Named {
        name: "x".into(),
        tensor: x,
    }];
    let runtime = normshift::runtime::open(kind).unwrap();
    let mut prepared = runtime.prepare(&source, &inputs).unwrap();
    prepared.run(&inputs).unwrap().remove(0).tensor
}

/// Float32 inputs whose float32 quotient by SCALE is exactly `k + 0.5`, for each `k` that has one.
fn exact_ties() -> Vec<(f32, f32)> {
    (0..255)
        .filter_map(|k| {
            let tie = k as f32 + 0.5;
            let near = (f64::from(tie) * f64::from(SCALE)) as f32;
            let mut x = f32::from_bits(near.to_bits() - 4);
            for _ in 0..8 {
                if x / SCALE == tie {
                    return Some((x, tie));
                }
                x = f32::from_bits(x.to_bits() + 1);
            }
            None
        })
        .collect()
}

/// The specification's uint8 code (zero point 0): divide, round half to even, saturate.
fn spec_code(x: f32) -> u8 {
    (x / SCALE).round_ties_even().clamp(0.0, 255.0) as u8
}

/// tract 0.23.9's: multiply by the float32 reciprocal, then round half to even.
fn tract_code(x: f32) -> u8 {
    (x * (1.0 / SCALE)).round_ties_even().clamp(0.0, 255.0) as u8
}

fn u8_values(t: &TensorData) -> Vec<u8> {
    match t.values() {
        Values::U8(v) => v.clone(),
        other => panic!("uint8 expected, got {other:?}"),
    }
}

#[test]
fn on_rounding_ties_onnxruntime_follows_the_specification_and_tract_multiplies_by_the_reciprocal() {
    let ties = exact_ties();
    assert!(ties.len() > 100, "{} ties", ties.len());
    let xs: Vec<f32> = ties.iter().map(|&(x, _)| x).collect();
    let input = || TensorData::new(vec![xs.len()], Values::F32(xs.clone())).unwrap();
    let bytes = quantize_model(xs.len() as i64);
    let spec: Vec<u8> = xs.iter().map(|&x| spec_code(x)).collect();
    for (&(_, tie), &code) in ties.iter().zip(&spec) {
        assert_eq!(f32::from(code), tie.round_ties_even(), "half to even");
    }
    // tract: its own formula on every element, one step off the specification on some.
    let tract = u8_values(&run_in(RuntimeKind::Tract, &bytes, input()));
    let predicted: Vec<u8> = xs.iter().map(|&x| tract_code(x)).collect();
    assert_eq!(
        tract, predicted,
        "tract computes round_half_even(x * fl32(1/scale))"
    );
    let off: Vec<(f32, u8, u8)> = ties
        .iter()
        .zip(spec.iter().zip(&tract))
        .filter(|(_, (s, t))| s != t)
        .map(|(&(_, tie), (&s, &t))| (tie, s, t))
        .collect();
    assert!(
        !off.is_empty(),
        "tract is spec-exact on these ties now: update conformance.rs and the docs"
    );
    assert!(off.iter().all(|&(_, s, t)| t == s + 1), "{off:?}");
    // 35 of the 217 ties; e.g. 6.5 → 6 by the specification, 7 by tract.
    assert!(
        off.iter()
            .any(|&(tie, s, t)| tie == 6.5 && s == 6 && t == 7),
        "{off:?}"
    );
    if onnxruntime_here("on_rounding_ties_onnxruntime_follows_the_specification") {
        let ort = u8_values(&run_in(RuntimeKind::Ort, &bytes, input()));
        assert_eq!(ort, spec, "onnxruntime is spec-exact on every tie");
    }
}

/// The `[2, 8]` input of the chain models: values from -3 to 3.
fn chain_input() -> TensorData {
    let x: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 0.4).collect();
    TensorData::new(vec![2, 8], Values::F32(x)).unwrap()
}

fn f32_values(t: &TensorData) -> Vec<f32> {
    match t.values() {
        Values::F32(v) => v.clone(),
        other => panic!("float32 expected, got {other:?}"),
    }
}

#[test]
fn tract_turns_dequantize_softmax_quantize_into_a_table_of_ones() {
    let softmax = chain_model("Softmax");
    let tract = f32_values(&run_in(RuntimeKind::Tract, &softmax, chain_input()));
    assert!(
        tract.iter().all(|&p| p == 1.0),
        "tract computes Softmax as an element-wise table: {tract:?} (fixed? update conformance.rs and the docs)"
    );
    // The Sigmoid chain, which is element-wise, is exact in tract: the table is right there.
    let sigmoid = chain_model("Sigmoid");
    let table = f32_values(&run_in(RuntimeKind::Tract, &sigmoid, chain_input()));
    let x = f32_values(&chain_input());
    for (p, x) in table.iter().zip(&x) {
        let q = ((x * 16.0).round_ties_even() + 128.0).clamp(0.0, 255.0) - 128.0;
        let q = q / 16.0;
        let expected = ((1.0 / (1.0 + (-q).exp())) * 255.0).round_ties_even() / 255.0;
        assert!((p - expected).abs() < 1e-6, "{p} vs {expected}");
    }
    if !onnxruntime_here("tract_turns_dequantize_softmax_quantize_into_a_table_of_ones") {
        return;
    }
    let ort = f32_values(&run_in(RuntimeKind::Ort, &softmax, chain_input()));
    for row in ort.chunks(8) {
        let sum: f32 = row.iter().sum();
        // Eight probabilities, each within half a step of 1/255.
        assert!((sum - 1.0).abs() <= 8.0 / 510.0, "{row:?}");
    }
    assert_eq!(
        f32_values(&run_in(RuntimeKind::Ort, &sigmoid, chain_input())),
        table
    );
}

#[test]
fn the_models_that_quantize_activations_are_told_apart() {
    let ties = activation_quantization(&model_of(&quantize_model(4)).graph);
    assert_eq!((ties.quantize, ties.softmax_chains), (1, 0));
    let softmax = activation_quantization(&model_of(&chain_model("Softmax")).graph);
    assert_eq!((softmax.quantize, softmax.softmax_chains), (2, 1));
    let sigmoid = activation_quantization(&model_of(&chain_model("Sigmoid")).graph);
    assert_eq!((sigmoid.quantize, sigmoid.softmax_chains), (2, 0));
    // Inside an `If` branch too.
    let branch = |out: &str| normshift::onnx::GraphProto {
        name: Some(format!("branch_{out}")),
        node: vec![node("QuantizeLinear", &["x", "scale", "zero"], &[out])],
        output: vec![typed(out, 2, &[4])],
        ..Default::default()
    };
    let mut choose = node("If", &["c"], &["q"]);
    choose.attribute = vec![
        graph_attr("then_branch", branch("a")),
        graph_attr("else_branch", branch("b")),
    ];
    let in_branches = tiny_model(|g| {
        g.node = vec![choose];
        g.initializer = vec![f32_scalar("scale", SCALE), scalar("zero", 2, vec![0])];
        g.input = vec![typed("x", 1, &[4]), bool_info("c")];
        g.output = vec![typed("q", 2, &[4])];
    });
    let branches = activation_quantization(&model_of(&in_branches).graph);
    assert_eq!((branches.quantize, branches.softmax_chains), (2, 0));
    let bert = normshift::io::load(&fixture("wild/bert.qdq_s8").join("model.onnx")).unwrap();
    let bert = activation_quantization(&bert.graph);
    assert_eq!((bert.quantize, bert.softmax_chains), (73, 2));
    let float = normshift::io::load(&fixture_model("bert_post.opset14")).unwrap();
    assert!(!activation_quantization(&float.graph).any());
}

/// `verify MODEL --reference DIR --json` in a process whose onnxruntime is `ort` (None: not loadable).
fn verify_reference(
    model: &std::path::Path,
    data: &std::path::Path,
    loadable: bool,
) -> serde_json::Value {
    let mut verify = std::process::Command::new(env!("CARGO_BIN_EXE_normshift"));
    verify.args([
        "verify",
        model.to_str().unwrap(),
        "--reference",
        data.to_str().unwrap(),
        "--json",
    ]);
    if !loadable {
        verify.env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so");
    }
    let o = verify.output().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    let ok = report["ok"].as_bool().unwrap();
    assert_eq!(
        o.status.code(),
        Some(if ok { 0 } else { 1 }),
        "{}",
        stderr(&o)
    );
    report
}

#[test]
fn auto_judges_a_quantized_model_by_onnxruntime_and_names_tracts_departure_when_only_tract_can() {
    // The ties model with the specification's codes as its reference outputs.
    let ties = exact_ties();
    let xs: Vec<f32> = ties.iter().map(|&(x, _)| x).collect();
    let (dir, model) = temp_model(&quantize_model(xs.len() as i64), "m.onnx");
    let data = dir.path().join("test_data_set_0");
    let x = TensorData::new(vec![xs.len()], Values::F32(xs.clone())).unwrap();
    let q = TensorData::new(
        vec![xs.len()],
        Values::U8(xs.iter().map(|&x| spec_code(x)).collect()),
    );
    normshift::verify::write_test_data(
        &data,
        &[Named {
            name: "x".into(),
            tensor: x,
        }],
        &[Named {
            name: "q".into(),
            tensor: q.unwrap(),
        }],
    )
    .unwrap();
    let by_tract = verify_reference(&model, &data, false);
    assert_eq!(by_tract["runtime"], "tract");
    assert_eq!(by_tract["ok"], false, "tract is one step off on some ties");
    let note = by_tract["runtime_note"].as_str().unwrap();
    assert!(
        note.contains("tract departs from the ONNX specification on this model: its QuantizeLinear multiplies by 1/scale instead of dividing by the scale"),
        "{note}"
    );
    // The static-QDQ BERT fixture, references from onnxruntime: tract's Softmax table is named.
    let bert = fixture("wild/bert.qdq_s8");
    let (model, data) = (bert.join("model.onnx"), bert.join("test_data_set_0"));
    let by_tract = verify_reference(&model, &data, false);
    assert_eq!(
        (by_tract["runtime"].as_str(), by_tract["ok"].as_bool()),
        (Some("tract"), Some(false))
    );
    assert!(
        by_tract["runtime_note"]
            .as_str()
            .unwrap()
            .contains("it turns each DequantizeLinear -> Softmax -> QuantizeLinear (2 here) into a lookup table"),
        "{by_tract}"
    );
    if !onnxruntime_here("auto_judges_a_quantized_model_by_onnxruntime") {
        return;
    }
    let by_ort = verify_reference(&model, &data, true);
    assert_eq!(by_ort["runtime"], "onnxruntime");
    assert_eq!(by_ort["ok"], true, "{by_ort}");
    assert_eq!(by_ort["runs"][0]["outputs"][0]["max_abs"], 0.0);
    assert!(
        by_ort["runtime_note"]
            .as_str()
            .unwrap()
            .starts_with("onnxruntime first: the model quantizes activations (73 QuantizeLinear)"),
        "{by_ort}"
    );
}
