//! Helpers shared by the integration tests: fixture paths, running the binary, and hand-built models.
#![allow(dead_code)]

pub mod forms;
pub mod stacks;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use normshift::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};
use prost::Message;

pub const FIXTURES: &[&str] = &[
    "bert_post.opset14",
    "bert_post.opset17",
    "gpt2_pre.opset14",
    "gpt2_pre.opset17",
    "llama_rms.opset14",
    "llama_rms.opset17",
    "gemma2_peri.opset17",
    "olmo2_out.opset17",
    "neox_parallel.opset17",
    "deepnorm_post.opset17",
];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

pub fn fixture_model(name: &str) -> PathBuf {
    fixture(name).join("model.onnx")
}

pub fn normshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_normshift"))
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn f32_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect(),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(shape),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `f32_info` with element type float16.
pub fn f16_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut info = f32_info(name, dims);
    if let Some(TypeProto {
        value: Some(type_proto::Value::TensorType(t)),
        ..
    }) = info.r#type.as_mut()
    {
        t.elem_type = Some(10);
    }
    info
}

/// Re-encodes a model with its default-domain opset (and a matching IR version) set to `version`.
pub fn with_opset(bytes: Vec<u8>, version: i64) -> Vec<u8> {
    let mut model = ModelProto::decode(bytes.as_slice()).expect("a model we built");
    model.opset_import = vec![OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(version),
    }];
    model.ir_version = Some(if version >= 19 {
        9
    } else if version >= 15 {
        8
    } else {
        7
    });
    model.encode_to_vec()
}

/// Writes `bytes` as `name` in a fresh temporary folder.
pub fn temp_model(bytes: &[u8], name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("writing the model");
    (dir, path)
}

/// `normshift convert IN -o OUT ARGS...` with `bytes` written as IN in a fresh temporary folder. Returns the
/// process output, the folder (deleted when dropped) and OUT's path.
pub fn convert_bytes(bytes: &[u8], args: &[&str]) -> (Output, tempfile::TempDir, PathBuf) {
    let (dir, input) = temp_model(bytes, "in.onnx");
    let output = dir.path().join("out.onnx");
    let mut all = vec![
        "convert",
        input.to_str().expect("a UTF-8 temporary path"),
        "-o",
        output.to_str().expect("a UTF-8 temporary path"),
    ];
    all.extend(args);
    (normshift(&all), dir, output)
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{op}_{}", outputs.first().copied().unwrap_or(""))),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(1),
        raw_data: Some(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ),
        ..Default::default()
    }
}

/// The names of the entries of `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading the folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A model `y = Relu(x + w)` over f32[2, 3], edited by `edit` before encoding.
pub fn tiny_model(edit: impl FnOnce(&mut GraphProto)) -> Vec<u8> {
    let mut graph = GraphProto {
        name: Some("tiny".into()),
        node: vec![
            node("Add", &["x", "w"], &["s"]),
            node("Relu", &["s"], &["y"]),
        ],
        initializer: vec![f32_tensor("w", &[2, 3], &[0.5, -1.0, 2.0, 0.0, 1.5, -0.5])],
        input: vec![f32_info("x", &[2, 3])],
        output: vec![f32_info("y", &[2, 3])],
        ..Default::default()
    };
    edit(&mut graph);
    let model = ModelProto {
        ir_version: Some(8),
        producer_name: Some("normshift-tests".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// A scalar boolean input (an `If` condition).
pub fn bool_info(name: &str) -> ValueInfoProto {
    let mut info = f32_info(name, &[]);
    if let Some(type_proto::Value::TensorType(t)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(9);
    }
    info
}

/// A graph-valued attribute (`then_branch`, `body`, …).
pub fn graph_attr(name: &str, g: GraphProto) -> normshift::onnx::AttributeProto {
    normshift::onnx::AttributeProto {
        name: Some(name.into()),
        r#type: Some(normshift::onnx::attribute_proto::AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// The variable `.ci/run` sets: there, a test that needs onnxruntime fails when it cannot be loaded, instead of
/// being skipped (a broken install would otherwise pass CI unnoticed).
pub const REQUIRE_ONNXRUNTIME: &str = "NORMSHIFT_REQUIRE_ONNXRUNTIME";

/// Whether onnxruntime can be loaded here. When it cannot: a failure of `test` if [`REQUIRE_ONNXRUNTIME`] is set,
/// else `false` and a line saying that `test` was skipped and why.
pub fn onnxruntime_here(test: &str) -> bool {
    use std::io::Write;
    let Err(why) = normshift::runtime::open(normshift::runtime::RuntimeKind::Ort) else {
        return true;
    };
    if std::env::var_os(REQUIRE_ONNXRUNTIME).is_some_and(|v| !v.is_empty()) {
        panic!(
            "{test} needs onnxruntime ({REQUIRE_ONNXRUNTIME} is set) and it cannot be loaded: {why}"
        );
    }
    // Written past the test harness's capture, so that a run without onnxruntime says what it skipped.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    false
}

/// A value info of element type `elem` whose dims are numbers or symbols (`"past + seq"` is a symbol too).
pub fn typed_info(name: &str, elem: i32, dims: &[&str]) -> ValueInfoProto {
    use normshift::onnx::tensor_shape_proto::{Dimension, dimension::Value};
    let mut v = f32_info(name, &[]);
    if let Some(normshift::onnx::type_proto::Value::TensorType(t)) =
        v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(elem);
        t.shape = Some(normshift::onnx::TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| Dimension {
                    value: Some(match d.parse::<i64>() {
                        Ok(n) => Value::DimValue(n),
                        Err(_) => Value::DimParam(d.to_string()),
                    }),
                    ..Default::default()
                })
                .collect(),
        });
    }
    v
}
