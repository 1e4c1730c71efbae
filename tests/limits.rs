//! Sizes no machine can hold, from a file or a command line: every command refuses them in one line (exit 2)
//! before reserving memory, writes nothing, leaves no temporary file, and stays small while doing so (peak RSS
//! measured per process). Commands that reserve nothing for those sizes (inspect, analyze, dump, extract, diff)
//! do their work, also in little memory.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use normshift::onnx::TensorProto;
use prost::Message;

/// 2^40: 4 TiB of float32 for one row of it.
const HUGE: i64 = 1 << 40;

/// The most a refusing (or merely reading) process may use. A debug binary starts at about 15 MB.
const PEAK_LIMIT_KIB: i64 = 160 * 1024;

/// What a command did.
struct Ran {
    code: Option<i32>,
    stderr: String,
    /// Peak resident set size of the process, from `wait4`.
    peak_kib: i64,
}

/// Runs the binary with `args` (and `env`), measuring its peak memory.
// The child is reaped by `wait4`, which std's `wait` does not offer and which gives its peak RSS.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_normshift"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("reading stderr");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten; `pid` is our child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and writes into the two locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    Ran {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stderr,
        peak_kib: usage.ru_maxrss,
    }
}

fn huge() -> String {
    HUGE.to_string()
}

/// `y = Relu(x)`, `x` and `y` of shape `[1, dim]`.
fn relu_of(dim: &str) -> Vec<u8> {
    tiny_model(|g| {
        g.node = vec![node("Relu", &["x"], &["y"])];
        g.initializer.clear();
        g.input = vec![typed_info("x", 1, &["1", dim])];
        g.output = vec![typed_info("y", 1, &["1", dim])];
    })
}

/// A decomposed LayerNorm with neither scale nor shift, `input` → `output`, names prefixed by `p`.
fn plain_layernorm(p: &str, input: &str, output: &str) -> Vec<normshift::onnx::NodeProto> {
    let n = |s: &str| format!("{p}{s}");
    let mut mean = node("ReduceMean", &[input], &[&n("mean")]);
    let mut var = node("ReduceMean", &[&n("sq")], &[&n("var")]);
    for r in [&mut mean, &mut var] {
        r.attribute = vec![normshift::onnx::AttributeProto {
            name: Some("axes".into()),
            r#type: Some(normshift::onnx::attribute_proto::AttributeType::Ints as i32),
            ints: vec![-1],
            ..Default::default()
        }];
    }
    vec![
        mean,
        node("Sub", &[input, &n("mean")], &[&n("centred")]),
        node("Mul", &[&n("centred"), &n("centred")], &[&n("sq")]),
        var,
        node("Add", &[&n("var"), "eps"], &[&n("var_eps")]),
        node("Sqrt", &[&n("var_eps")], &[&n("std")]),
        node("Div", &[&n("centred"), &n("std")], &[output]),
    ]
}

/// A plain LayerNorm over a hidden axis the file declares as 2^40.
fn norm_declared_huge() -> Vec<u8> {
    with_opset(
        tiny_model(|g| {
            g.node = plain_layernorm("", "x", "y");
            g.initializer = vec![f32_tensor("eps", &[], &[1e-5])];
            g.input = vec![typed_info("x", 1, &["1", "4", &huge()])];
            g.output = vec![typed_info("y", 1, &["1", "4", &huge()])];
        }),
        14,
    )
}

/// A plain LayerNorm whose input declares no hidden size (a symbol) but reshapes it to 2^40 on the way.
fn norm_undeclared_then_huge() -> Vec<u8> {
    with_opset(
        tiny_model(|g| {
            let mut nodes = vec![node("Reshape", &["x", "shape"], &["r"])];
            nodes.extend(plain_layernorm("", "r", "y"));
            g.node = nodes;
            g.initializer = vec![
                f32_tensor("eps", &[], &[1e-5]),
                i64_tensor("shape", &[1, 4, HUGE]),
            ];
            g.input = vec![typed_info("x", 1, &["1", "4", "hidden"])];
            g.output = vec![typed_info("y", 1, &["1", "4", "hidden"])];
        }),
        14,
    )
}

/// A Pre-LN unit and a final norm, neither with scale or shift, whose weights hold no data: the embedding
/// table `[0, 2^40]`, the projections `[2^40, 0]` and `[0, 2^40]`. The hidden size 2^40 comes from them alone.
fn pre_ln_of_empty_weights() -> Vec<u8> {
    let empty = |name: &str, dims: &[i64]| f32_tensor(name, dims, &[]);
    with_opset(
        tiny_model(|g| {
            let mut nodes = vec![node("Gather", &["table", "ids"], &["x"])];
            nodes.extend(plain_layernorm("n0/", "x", "n"));
            nodes.extend([
                node("MatMul", &["n", "w1"], &["f1"]),
                node("Relu", &["f1"], &["r"]),
                node("MatMul", &["r", "w2"], &["f2"]),
                node("Add", &["x", "f2"], &["x1"]),
            ]);
            nodes.extend(plain_layernorm("final/", "x1", "y"));
            g.node = nodes;
            g.initializer = vec![
                empty("table", &[0, HUGE]),
                empty("w1", &[HUGE, 0]),
                empty("w2", &[0, HUGE]),
                f32_tensor("eps", &[], &[1e-5]),
            ];
            g.input = vec![typed_info("ids", 7, &["batch", "sequence"])];
            g.output = vec![typed_info("y", 1, &["batch", "sequence", &huge()])];
        }),
        14,
    )
}

fn i64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(7),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A test-data folder whose `input_0.pb` claims 2^40 floats for `x` and holds two.
fn test_data_claiming_huge(dir: &Path) -> std::path::PathBuf {
    let set = dir.join("test_data_set_0");
    std::fs::create_dir_all(&set).unwrap();
    let mut t = f32_tensor("x", &[1, HUGE], &[0.5, 1.0]);
    t.name = Some("x".into());
    std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).unwrap();
    let out = f32_tensor("y", &[1, 2], &[0.5, 1.0]);
    std::fs::write(set.join("output_0.pb"), out.encode_to_vec()).unwrap();
    set
}

/// One command on the model `bytes` (written as `m.onnx` in a fresh folder; `{M}` in `args` is its path, `{D}`
/// the folder): exit `code`, one line on stderr containing every `expect`, nothing written or left behind,
/// small peak memory.
fn refuses(bytes: &[u8], args: &[&str], code: i32, expect: &[&str]) {
    refuses_with(bytes, args, &[], code, expect, |_| {});
}

fn refuses_with(
    bytes: &[u8],
    args: &[&str],
    env: &[(&str, &str)],
    code: i32,
    expect: &[&str],
    prepare: impl FnOnce(&Path),
) {
    let (dir, model) = temp_model(bytes, "m.onnx");
    prepare(dir.path());
    let before = files_in(dir.path());
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("{M}", model.to_str().unwrap())
                .replace("{D}", dir.path().to_str().unwrap())
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ran = run_measured(&args, env);
    let said = &ran.stderr;
    assert_eq!(ran.code, Some(code), "{args:?}: {said}");
    assert_eq!(
        said.trim_end().lines().count(),
        1,
        "{args:?}: one line: {said}"
    );
    for e in expect {
        assert!(said.contains(e), "{args:?}: expected `{e}` in: {said}");
    }
    // What an abort or an uncontained panic prints (a runtime's contained panic is reported as its failure).
    for never in ["panicked at", "memory allocation of", "stack backtrace"] {
        assert!(!said.contains(never), "{args:?}: {said}");
    }
    assert_eq!(
        files_in(dir.path()),
        before,
        "{args:?} wrote or left something"
    );
    assert!(
        ran.peak_kib < PEAK_LIMIT_KIB,
        "{args:?}: peak RSS {} KiB",
        ran.peak_kib
    );
}

const OVER: &str = "memory budget";

#[test]
fn a_fixed_input_dim_of_2_pow_40_is_refused_by_every_command_that_would_make_inputs() {
    let model = relu_of(&huge());
    let declared = "input `x` of shape [1, 1099511627776] (axis 1: 1099511627776, declared by the file): \
                    4 TiB of f32, over the";
    for args in [
        &["verify", "{M}", "{M}"][..],
        &["verify", "{M}", "--runtime", "tract,ort"],
        &["verify", "{M}", "{M}", "--verify-by", "unit"],
        &["run", "{M}", "-o", "{D}/out"],
        &["bench", "{M}", "--runs", "1"],
        &[
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "cleanup",
        ],
        &[
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "cleanup",
            "--runtime",
            "ort",
        ],
    ] {
        refuses(&model, args, 2, &[declared, OVER]);
    }
}

#[test]
fn an_absurd_dim_is_refused_naming_the_flag() {
    let model = relu_of("hidden");
    let given =
        "input `x` of shape [1, 1099511627776] (axis 1: `hidden` = 1099511627776, as given)";
    let dim = format!("hidden={HUGE}");
    for args in [
        &["verify", "{M}", "{M}", "--dim", &dim][..],
        &["run", "{M}", "--dim", &dim, "-o", "{D}/out"],
        &["bench", "{M}", "--dim", &dim, "--runs", "1"],
        &[
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "cleanup",
            "--dim",
            &dim,
        ],
    ] {
        refuses(&model, args, 2, &[given, OVER]);
    }
    // bench's own size for unnamed symbols.
    refuses(
        &model,
        &["bench", "{M}", "--seq", &HUGE.to_string(), "--runs", "1"],
        2,
        &[
            "`hidden` = 1099511627776, the size for symbols given no size",
            OVER,
        ],
    );
}

#[test]
fn dims_whose_product_overflows_are_refused_not_wrapped() {
    let model = tiny_model(|g| {
        g.node = vec![node("Relu", &["x"], &["y"])];
        g.initializer.clear();
        g.input = vec![typed_info("x", 1, &[&huge(), &huge(), &huge()])];
        g.output = vec![typed_info("y", 1, &["a", "b", "c"])];
    });
    refuses(
        &model,
        &["run", "{M}"],
        2,
        &["more than 2^128 bytes of f32", OVER],
    );
}

#[test]
fn a_plain_norm_whose_hidden_size_is_huge_is_refused_by_the_passes_that_would_build_its_ones() {
    let declared = norm_declared_huge();
    for verify in [&["--no-verify"][..], &[]] {
        let mut args = vec![
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "fuse-layernorm",
        ];
        args.extend(verify);
        refuses(
            &declared,
            &args,
            2,
            &[
                "pass `fuse-layernorm` cannot run on this model: `y`: its scale of ones of shape \
                 [1099511627776] (declared for `x` in the file)",
                "12 TiB, over the",
            ],
        );
    }
    // And the commands that would make inputs for it.
    for args in [
        &["verify", "{M}", "{M}"][..],
        &["run", "{M}"],
        &["bench", "{M}"],
    ] {
        refuses(
            &declared,
            args,
            2,
            &["input `x` of shape [1, 4, 1099511627776]", OVER],
        );
    }
    let undeclared = norm_undeclared_then_huge();
    for verify in [&["--no-verify"][..], &[]] {
        let mut args = vec![
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "fuse-layernorm",
        ];
        args.extend(verify);
        refuses(
            &undeclared,
            &args,
            2,
            &[
                "its scale of ones of shape [1099511627776] (inferred from the graph around the norm)",
                OVER,
            ],
        );
    }
    let empty_weights = pre_ln_of_empty_weights();
    refuses(
        &empty_weights,
        &[
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "layernorm-to-rmsnorm",
            "--no-verify",
        ],
        2,
        &[
            "norm #0's scale of ones for hidden size 1099511627776 (from the weights the stream meets)",
            OVER,
        ],
    );
    refuses(
        &empty_weights,
        &[
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "fuse-layernorm",
            "--no-verify",
        ],
        2,
        &["`n`: its scale of ones of shape [1099511627776]", OVER],
    );
    // Running it, the runtime's own tensors are the runtime's: tract refuses the allocation (exit 3).
    refuses(
        &empty_weights,
        &["run", "{M}", "--runtime", "tract"],
        3,
        &["failed to allocate"],
    );
}

#[test]
fn a_test_data_tensor_that_claims_2_pow_40_elements_is_refused_by_every_command_that_reads_it() {
    let model = relu_of("n");
    let claim = "tensor `x` claims shape [1, 1099511627776] (1099511627776 elements) but holds 2";
    for args in [
        &["verify", "{M}", "--reference", "{D}/data"][..],
        &["verify", "{M}", "{M}", "--inputs", "{D}/data"],
        &[
            "run",
            "{M}",
            "--inputs",
            "{D}/data/test_data_set_0",
            "-o",
            "{D}/out",
        ],
        &[
            "convert",
            "{M}",
            "-o",
            "{D}/out.onnx",
            "--passes",
            "cleanup",
            "--inputs",
            "{D}/data",
        ],
    ] {
        refuses_with(
            &model,
            args,
            &[],
            2,
            &["cannot read test data", "input_0.pb", claim],
            |d| {
                test_data_claiming_huge(&d.join("data"));
            },
        );
    }
}

#[test]
fn commands_that_reserve_nothing_for_a_size_read_such_models_in_little_memory() {
    for bytes in [
        relu_of(&huge()),
        norm_declared_huge(),
        pre_ln_of_empty_weights(),
    ] {
        let (dir, model) = temp_model(&bytes, "m.onnx");
        let m = model.to_str().unwrap();
        let out = dir.path().join("part.onnx");
        for args in [
            &["inspect", m][..],
            &["analyze", m],
            &["dump", m],
            &["diff", m, m],
            &["extract", m, "--to", "y", "-o", out.to_str().unwrap()],
        ] {
            let ran = run_measured(args, &[]);
            assert_eq!(ran.code, Some(0), "{args:?}: {}", ran.stderr);
            assert!(
                ran.peak_kib < PEAK_LIMIT_KIB,
                "{args:?}: {} KiB",
                ran.peak_kib
            );
        }
    }
}

#[test]
fn the_budget_is_the_variable_when_set_and_generated_sets_share_it() {
    // 2^20 floats, 4 MiB per set.
    let model = relu_of("1048576");
    let budget = |b: &'static str| [("NORMSHIFT_MEMORY_BUDGET", b)];
    refuses_with(
        &model,
        &["run", "{M}"],
        &budget("1M"),
        2,
        &["4 MiB of f32, over the 1 MiB memory budget (NORMSHIFT_MEMORY_BUDGET)"],
        |_| {},
    );
    let ran = run_measured(
        &["run", &fixture_model("bert_post.opset14").to_string_lossy()],
        &budget("64M"),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    // Three sets of 4 MiB in 10 MiB: the third is refused, saying what the others hold.
    refuses_with(
        &model,
        &["verify", "{M}", "{M}", "--seeds", "3", "--runtime", "tract"],
        &budget("10M"),
        2,
        &[
            "4 MiB of f32, over the 10 MiB memory budget (NORMSHIFT_MEMORY_BUDGET) with 8 MiB reserved before it",
        ],
        |_| {},
    );
    refuses_with(
        &model,
        &["run", "{M}"],
        &budget("lots"),
        2,
        &["NORMSHIFT_MEMORY_BUDGET is `lots`, which is not a size"],
        |_| {},
    );
}

#[test]
fn a_test_data_file_over_the_budget_is_refused_before_it_is_read() {
    let model = relu_of("n");
    refuses_with(
        &model,
        &["run", "{M}", "--inputs", "{D}/data"],
        &[("NORMSHIFT_MEMORY_BUDGET", "1K")],
        2,
        &[
            "cannot read test data",
            "the file (",
            "memory budget (NORMSHIFT_MEMORY_BUDGET)",
        ],
        |d| {
            let set = d.join("data");
            std::fs::create_dir_all(&set).unwrap();
            let t = f32_tensor("x", &[1, 4096], &[0.25; 4096]);
            std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).unwrap();
        },
    );
}
