//! The two runtimes behind one trait: onnxruntime beside tract, `auto` falling back from one to the other, and
//! a runtime's panic reported as its failure. Tests that need onnxruntime say that they were skipped, and why,
//! on a machine without it (`.ci/run` installs it).

mod common;

use common::*;
use normshift::onnx::ValueInfoProto;
use normshift::runtime::{RuntimeKind, TensorData, Values};

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(o), stderr(o)))
}

fn i64_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let mut info = f32_info(name, dims);
    if let Some(normshift::onnx::type_proto::Value::TensorType(t)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = Some(normshift::onnx::tensor_proto::DataType::Int64 as i32);
    }
    info
}

/// `y = Gather(table, ids)`: a table of 3 rows, read with the ids the caller feeds.
fn gather_model() -> Vec<u8> {
    tiny_model(|g| {
        g.initializer = vec![f32_tensor(
            "table",
            &[3, 2],
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        )];
        g.input = vec![i64_info("ids", &[2])];
        g.output = vec![f32_info("y", &[2, 2])];
        g.node = vec![node("Gather", &["table", "ids"], &["y"])];
    })
}

/// A model tract cannot prepare ("Unimplemented(Det)") but onnxruntime runs: `y = Det(x)`.
fn det_model() -> Vec<u8> {
    with_opset(
        tiny_model(|g| {
            g.input = vec![f32_info("x", &[2, 3, 3])];
            g.output = vec![f32_info("y", &[2])];
            g.node = vec![node("Det", &["x"], &["y"])];
            g.initializer.clear();
        }),
        18,
    )
}

#[test]
fn a_panic_inside_tract_is_a_runtime_failure_not_a_crash() {
    let (dir, path) = temp_model(&gather_model(), "m.onnx");
    let inputs = dir.path().join("inputs");
    let ids = TensorData::new(vec![2], Values::I64(vec![0, 7])).unwrap();
    normshift::verify::write_test_data(
        &inputs,
        &[normshift::runtime::Named {
            name: "ids".into(),
            tensor: ids,
        }],
        &[],
    )
    .unwrap();
    let o = normshift(&[
        "run",
        path.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--runtime",
        "tract",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.starts_with("normshift: tract cannot"), "{err}");
    assert!(
        !err.contains("RUST_BACKTRACE"),
        "the panic message itself must not reach the user: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn one_model_in_both_runtimes_agrees_on_every_fixture() {
    if !onnxruntime_here("one_model_in_both_runtimes_agrees_on_every_fixture") {
        return;
    }
    for name in FIXTURES {
        let path = fixture_model(name);
        let o = normshift(&[
            "verify",
            path.to_str().unwrap(),
            "--runtime",
            "tract,ort",
            "--json",
        ]);
        let v = json(&o);
        assert_eq!(o.status.code(), Some(0), "{name}: {v}");
        assert_eq!(v["runtime"], "onnxruntime", "{name}");
        assert_eq!(v["reference_runtime"], "tract", "{name}");
        assert!(
            v["runs"][0]["outputs"][0]["max_abs"].as_f64().unwrap() < 1e-4,
            "{name}: {v}"
        );
    }
}

#[test]
fn auto_verifies_with_onnxruntime_when_tract_cannot_run_the_model() {
    let (dir, path) = temp_model(&det_model(), "det.onnx");
    let tract_only = normshift(&[
        "verify",
        path.to_str().unwrap(),
        path.to_str().unwrap(),
        "--runtime",
        "tract",
    ]);
    assert_eq!(
        tract_only.status.code(),
        Some(3),
        "tract cannot run Det: {}",
        stderr(&tract_only)
    );
    if !onnxruntime_here("auto_verifies_with_onnxruntime_when_tract_cannot_run_the_model") {
        return;
    }
    let out = dir.path().join("out.onnx");
    let o = normshift(&[
        "convert",
        path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "cleanup",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["verification"]["runtime"], "onnxruntime");
    let note = v["verification"]["runtime_note"]
        .as_str()
        .unwrap_or_default();
    assert!(
        note.contains("tract cannot") && note.contains("judged by onnxruntime"),
        "{note}"
    );
    assert!(out.exists());
}

#[test]
fn onnxruntime_reads_external_data_of_a_model_from_memory() {
    if !onnxruntime_here("onnxruntime_reads_external_data_of_a_model_from_memory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let external = dir.path().join("ext.onnx");
    let o = normshift(&[
        "convert",
        fixture_model("gpt2_pre.opset17").to_str().unwrap(),
        "-o",
        external.to_str().unwrap(),
        "--external-data",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.path().join("ext.onnx.data").exists());
    // Converting the external-data model verifies it in onnxruntime from memory, its data read from its folder.
    let out = dir.path().join("fused.onnx");
    let o = normshift(&[
        "convert",
        external.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "fold-norm-affine",
        "--runtime",
        "ort",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["verification"]["runtime"], "onnxruntime");
    assert_eq!(v["verification"]["ok"], true);
}

#[test]
fn run_and_bench_take_either_runtime() {
    if !onnxruntime_here("run_and_bench_take_either_runtime") {
        return;
    }
    let path = fixture_model("llama_rms.opset17");
    let o = normshift(&["run", path.to_str().unwrap(), "--runtime", "ort", "--json"]);
    assert_eq!(json(&o)["runtime"], "onnxruntime", "{}", stderr(&o));
    let o = normshift(&[
        "bench",
        path.to_str().unwrap(),
        "--runtime",
        "tract,ort",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--seq",
        "8",
        "--json",
    ]);
    let v = json(&o);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{v}");
    assert_eq!(models[0]["runtime"], "tract");
    assert_eq!(models[1]["runtime"], "onnxruntime");
    assert_eq!(models[1]["matches_first"], true, "{v}");
}

#[test]
fn the_runtime_kinds_have_their_names() {
    assert_eq!(RuntimeKind::Ort.to_string(), "onnxruntime");
    assert_eq!(serde_json::to_value(RuntimeKind::Tract).unwrap(), "tract");
}

/// Runs `test` of this test binary again in a process that cannot load onnxruntime, with or without
/// [`REQUIRE_ONNXRUNTIME`].
fn rerun_without_onnxruntime(test: &str, require: bool) -> std::process::Output {
    let mut rerun = std::process::Command::new(std::env::current_exe().unwrap());
    rerun
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .env_remove(REQUIRE_ONNXRUNTIME);
    if require {
        rerun.env(REQUIRE_ONNXRUNTIME, "1");
    }
    rerun.output().unwrap()
}

#[test]
fn where_ci_requires_onnxruntime_a_test_that_cannot_load_it_fails_instead_of_skipping() {
    let test = "run_and_bench_take_either_runtime";
    let skipped = rerun_without_onnxruntime(test, false);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(
        stderr(&skipped).contains(&format!(
            "SKIPPED {test}: onnxruntime is not available: ORT_DYLIB_PATH is /nonexistent"
        )),
        "{}",
        stderr(&skipped)
    );
    let required = rerun_without_onnxruntime(test, true);
    let said = format!("{}{}", stdout(&required), stderr(&required));
    assert!(!required.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "{test} needs onnxruntime (NORMSHIFT_REQUIRE_ONNXRUNTIME is set) and it cannot be loaded: \
             onnxruntime is not available: ORT_DYLIB_PATH is /nonexistent"
        )),
        "{said}"
    );
}

#[test]
fn ci_checks_that_onnxruntime_loads_before_it_runs_the_tests() {
    // `.ci/run` runs `.ci/check-onnxruntime` on the built binary before `cargo test`, and exports the variable
    // that turns a skipped onnxruntime test into a failure.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let check_at = ci.find(".ci/check-onnxruntime target/debug/normshift");
    let test_at = ci.find("\ncargo test\n");
    assert!(
        check_at.is_some() && check_at < test_at,
        "the check runs before `cargo test`"
    );
    assert!(ci.contains(&format!("export {REQUIRE_ONNXRUNTIME}=1")));
    let check = |dylib: &str| {
        std::process::Command::new(root.join(".ci/check-onnxruntime"))
            .arg(env!("CARGO_BIN_EXE_normshift"))
            .env("ORT_DYLIB_PATH", dylib)
            .output()
            .unwrap()
    };
    let missing = check("/nonexistent/libonnxruntime.so");
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert_eq!(
        stderr(&missing).trim_end(),
        "CI needs onnxruntime and it cannot be loaded: onnxruntime is not available: ORT_DYLIB_PATH is \
         /nonexistent/libonnxruntime.so, which is not a file"
    );
    if let Ok(library) = normshift::runtime::onnxruntime_library() {
        let found = check(library.to_str().unwrap());
        assert_eq!(found.status.code(), Some(0), "{}", stderr(&found));
    }
}
