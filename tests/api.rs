//! The library API (`normshift::api`) does each command's work: the command line and the Python module only
//! parse, call it and print. Every command is exercised here through the API alone.

mod common;

use common::*;
use normshift::api::{
    self, ConvertRequest, ErrorKind, InputsRequest, Remedy, RuntimeRequest, VerifyRequest,
};
use normshift::convert::Quiet;
use normshift::runtime::RuntimeKind;
use normshift::verify::{ModelRef, RuntimeChoice};

fn bert() -> (std::path::PathBuf, normshift::Model) {
    let path = fixture_model("bert_post.opset14");
    let model = api::load(&path).unwrap();
    (path, model)
}

#[test]
fn inspect_analyze_dump_and_passes_describe_the_model() {
    let (path, model) = bert();
    let inspection = api::inspect(&model, &path).unwrap();
    assert_eq!(inspection.path, path);
    assert_eq!(inspection.summary.nodes, model.graph.op_count());
    let analysis = api::analyze(&model).unwrap();
    assert_eq!(
        (analysis.main.placement.as_str(), analysis.main.unit_count),
        ("post", 4)
    );
    assert!(analysis.table().contains("placement post"));
    assert!(api::dump(&model, false).contains("ReduceMean"));
    let names: Vec<&str> = api::passes().iter().map(|p| p.name).collect();
    assert!(names.contains(&"fuse-layernorm") && names.contains(&"post-to-pre"));
}

#[test]
fn convert_writes_a_verified_result_and_refuses_a_request_that_contradicts_itself() {
    let (path, model) = bert();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fused.onnx");
    let request = ConvertRequest {
        passes: vec!["fuse-layernorm".into(), " ".into()],
        ..Default::default()
    };
    let report = api::convert(&model, &path, &out, &request, &mut Quiet).unwrap();
    assert!(report.written && out.exists());
    assert!(report.verification.as_ref().is_some_and(|v| v.ok));
    // Two input sets by default, so that a merged decoder runs both branches.
    assert_eq!(report.verification.as_ref().unwrap().runs.len(), 2);
    let (result, in_memory) =
        api::convert_in_memory(&model, &path, &out, &request, &mut Quiet).unwrap();
    assert!(!in_memory.written);
    assert_eq!(
        result.graph.op_count(),
        api::load(&out).unwrap().graph.op_count()
    );

    let contradictory = ConvertRequest {
        passes: vec!["fuse-layernorm".into()],
        inputs: InputsRequest {
            inputs: Some(dir.path().into()),
            seeds: Some(3),
            dims: Vec::new(),
        },
        ..Default::default()
    };
    let err = contradictory.options().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
    let unknown = ConvertRequest {
        passes: vec!["fuse-everything".into()],
        ..Default::default()
    };
    assert_eq!(unknown.options().unwrap_err().kind(), ErrorKind::Usage);
    // Overwriting the input is refused, and the error says what the caller could do about it.
    let err = api::convert(&model, &path, &path, &request, &mut Quiet).unwrap_err();
    assert_eq!(
        (err.kind(), err.remedy()),
        (ErrorKind::Usage, Some(Remedy::Force))
    );
}

#[test]
fn a_calibrated_conversion_is_verified_on_its_held_out_sets_unless_inputs_are_named() {
    let (path, model) = bert();
    let sets = tempfile::tempdir().unwrap();
    for k in 0..4u64 {
        api::run(
            &model,
            &path,
            &InputsRequest::default(),
            k,
            RuntimeChoice::Only(RuntimeKind::Tract),
            Some(&sets.path().join(format!("test_data_set_{k}"))),
        )
        .unwrap();
    }
    let request = ConvertRequest {
        passes: vec!["post-to-pre".into()],
        calibration: Some(sets.path().into()),
        hold_out_every: 2,
        ..Default::default()
    };
    let options = request.options().unwrap();
    let calibration = options.calibration.as_ref().unwrap();
    assert_eq!((calibration.fit.len(), calibration.held_out.len()), (2, 2));
    let held_out: Vec<String> = calibration
        .held_out
        .iter()
        .map(|s| s.label.clone())
        .collect();
    match &options.verify.as_ref().unwrap().inputs {
        normshift::verify::InputSource::Sets(sets) => {
            assert_eq!(
                sets.iter().map(|s| s.label.clone()).collect::<Vec<_>>(),
                held_out
            )
        }
        other => panic!("verified on {other:?}"),
    }
    let named = ConvertRequest {
        inputs: InputsRequest {
            seeds: Some(1),
            ..Default::default()
        },
        ..request
    };
    assert!(matches!(
        named.options().unwrap().verify.unwrap().inputs,
        normshift::verify::InputSource::Seeds { .. }
    ));
}

#[test]
fn verify_run_extract_and_diff_work_from_the_api() {
    let (path, model) = bert();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fused.onnx");
    let request = ConvertRequest {
        passes: vec!["fuse-layernorm".into()],
        verify: false,
        ..Default::default()
    };
    api::convert(&model, &path, &out, &request, &mut Quiet).unwrap();
    let fused = api::load(&out).unwrap();

    let same = api::verify(
        &ModelRef::loaded(&model, &path),
        Some(&ModelRef::loaded(&fused, &out)),
        None,
        &VerifyRequest {
            runtime: RuntimeRequest::Choice(RuntimeChoice::Only(RuntimeKind::Tract)),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(same.ok);
    let nothing_to_compare = api::verify(
        &ModelRef::loaded(&model, &path),
        None,
        None,
        &VerifyRequest::default(),
    )
    .unwrap_err();
    assert_eq!(nothing_to_compare.kind(), ErrorKind::Usage);

    let data = dir.path().join("set");
    let ran = api::run(
        &model,
        &path,
        &InputsRequest::default(),
        7,
        RuntimeChoice::Auto,
        Some(&data),
    )
    .unwrap();
    assert_eq!(ran.runtime, RuntimeKind::Tract);
    assert!(data.join("output_0.pb").exists() && data.join("input_0.pb").exists());
    let against_stored = api::verify(
        &ModelRef::loaded(&fused, &out),
        None,
        Some(&data),
        &VerifyRequest::default(),
    )
    .unwrap();
    assert!(against_stored.ok);

    let analysis = api::analyze(&model).unwrap();
    let stream = |v| model.graph.value(v).name.clone();
    let unit = &analysis.main.residual_units[1];
    let part = dir.path().join("unit1.onnx");
    let extracted = api::extract(
        &model,
        &path,
        &[stream(unit.stream_in)],
        &[stream(unit.sum.unwrap())],
        &part,
    )
    .unwrap();
    assert!(part.exists() && extracted.nodes > 0);

    let d = api::diff(&model, &fused);
    assert!(!d.is_empty());
    assert!(api::diff(&model, &model).is_empty());
}

#[test]
fn a_missing_file_is_a_file_error_and_a_broken_one_a_model_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = api::load(&dir.path().join("absent.onnx")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::File);
    let broken = dir.path().join("broken.onnx");
    std::fs::write(&broken, b"not a model").unwrap();
    assert_eq!(api::load(&broken).unwrap_err().kind(), ErrorKind::Model);
}
