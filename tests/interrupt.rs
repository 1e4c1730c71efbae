//! Interrupting `convert` (SIGINT, as Ctrl-C sends) leaves either the complete output or nothing: never a
//! partial output file, never a stray temporary.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::forms::LN;
use common::stacks::{NormSpec, Placement, StackSpec, UnitSpec, residual_stack};
use common::*;

/// `y = x + w` with a `w` of `floats` elements, so that writing the model takes a while.
fn large_model(floats: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..floats).map(|i| (i % 97) as f32 * 0.01).collect();
    tiny_model(|g| {
        g.initializer = vec![f32_tensor("w", &[floats as i64], &values)];
        g.input = vec![f32_info("x", &[floats as i64])];
        g.output = vec![f32_info("y", &[floats as i64])];
        g.node = vec![node("Add", &["x", "w"], &["y"])];
    })
}

fn start_convert(input: &Path, output: &Path) -> Child {
    start_convert_with(input, output, &["--no-verify", "--external-data"])
}

fn start_convert_with(input: &Path, output: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_normshift"))
        .arg("convert")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting normshift")
}

fn interrupt(child: &Child) {
    // SAFETY: sending a signal to a child process we started and have not yet waited for.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0, "kill failed");
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("reading the folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("normshift-tmp"))
        .collect()
}

/// After the process ended: either it finished (exit 0) and the output loads, or it was interrupted (exit 130)
/// and there is no output at all; in both cases no temporary file.
fn check_outcome(child: Child, dir: &Path, output: &Path) -> Option<i32> {
    let finished = child.wait_with_output().expect("waiting for normshift");
    let status = finished.status;
    let err = String::from_utf8_lossy(&finished.stderr);
    if status.code().is_none() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    }
    let leftovers = temporaries(dir);
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let data = dir.join("out.onnx.data");
    match status.code() {
        Some(0) => {
            normshift::io::load(output).expect("a finished output loads");
        }
        // 130 after the write (while reporting or freeing memory): the handler says so, and the output is whole.
        Some(130) if err.contains("interrupted after writing") => {
            assert!(err.contains(&output.display().to_string()), "{err}");
            normshift::io::load(output).expect("an output written before the interrupt loads");
        }
        // 130: our handler ran. No code: SIGINT arrived before the handler was installed, when nothing had been
        // written yet.
        Some(130) | None => {
            assert!(!output.exists(), "an interrupted convert left {output:?}");
            assert!(!data.exists(), "an interrupted convert left {data:?}");
        }
        other => panic!("unexpected exit {other:?}: {err}"),
    }
    status.code()
}

#[test]
fn an_interrupt_while_writing_leaves_nothing() {
    let (dir, input) = temp_model(&large_model(64 << 20), "in.onnx");
    let output = dir.path().join("out.onnx");
    let child = start_convert(&input, &output);
    // Wait for the first temporary file to appear, then interrupt: the write is in progress.
    let started = Instant::now();
    while temporaries(dir.path()).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    interrupt(&child);
    assert_eq!(check_outcome(child, dir.path(), &output), Some(130));
}

#[test]
fn an_interrupt_at_any_moment_leaves_all_or_nothing() {
    let (dir, input) = temp_model(&large_model(16 << 20), "in.onnx");
    let output = dir.path().join("out.onnx");
    for delay_ms in [0u64, 5, 20, 50, 100, 200, 400, 800] {
        let _ = std::fs::remove_file(&output);
        let _ = std::fs::remove_file(dir.path().join("out.onnx.data"));
        let child = start_convert(&input, &output);
        std::thread::sleep(Duration::from_millis(delay_ms));
        interrupt(&child);
        check_outcome(child, dir.path(), &output);
    }
}

/// A Post-LN stack the size of BERT-base (453 MB of weights: 24 units of two 1536×1536 layers), its norms
/// decomposed, so that `fuse-layernorm` changes it and verification runs both models in full.
fn bert_base_size_stack() -> Vec<u8> {
    let hidden = 1536;
    let norm = NormSpec {
        form: LN,
        eps: 1e-5,
        gamma: vec![1.0; hidden],
        beta: vec![0.0; hidden],
    };
    let unit = UnitSpec {
        norm: norm.clone(),
        w1: vec![0.01; hidden * hidden],
        w2: vec![-0.01; hidden * hidden],
    };
    residual_stack(&StackSpec {
        placement: Placement::Post,
        hidden,
        seq: 4,
        units: vec![unit; 24],
        outer: norm,
        opset: 17,
        shared_parameters: false,
    })
}

#[test]
fn an_interrupt_during_a_verified_conversion_leaves_the_folder_as_it_was() {
    let (dir, input) = temp_model(&bert_base_size_stack(), "in.onnx");
    let output = dir.path().join("out.onnx");
    let args = ["--passes", "fuse-layernorm"];
    // Once to the end: how long a whole verified conversion takes, and that it does write.
    let started = Instant::now();
    let child = start_convert_with(&input, &output, &args);
    assert_eq!(check_outcome(child, dir.path(), &output), Some(0));
    let whole = started.elapsed();
    assert_eq!(files_in(dir.path()), ["in.onnx", "out.onnx"]);
    std::fs::remove_file(&output).expect("removing the output");
    // Then interrupted from 0.2 s to just before its end: loading, the pass, verification, the write.
    for fraction in [0.0, 0.25, 0.5, 0.75, 0.95] {
        let delay = Duration::from_millis(200).max(whole.mul_f64(fraction));
        let child = start_convert_with(&input, &output, &args);
        std::thread::sleep(delay);
        interrupt(&child);
        let status = check_outcome(child, dir.path(), &output);
        let left = files_in(dir.path());
        match status {
            Some(0) | Some(130) if output.exists() => {
                assert_eq!(left, ["in.onnx", "out.onnx"], "finished at {delay:?}");
                std::fs::remove_file(&output).expect("removing the output");
            }
            _ => assert_eq!(
                left,
                ["in.onnx"],
                "interrupted at {delay:?} of {whole:?}: {left:?}"
            ),
        }
    }
}
