//! Property tests on random residual stacks: 1–4 units, Post-LN (with an embedding norm) or Pre-LN (with a final
//! norm), every norm decomposed in its own randomly chosen form (LayerNorm or RMSNorm; each division form; Pow or
//! Mul for the square; axes as attribute or input; ε scalar or one-element; with or without casts; Gemma's
//! `1 + w`), with random hidden size, sequence length, ε and weights. For each stack:
//!
//! * export → import is the identity (byte for byte);
//! * analysis does not panic, and finds the placement, every unit and every norm;
//! * the exact passes, in the order a user runs them, keep tract's outputs within the default tolerance (a pass
//!   may refuse a model it does not apply to — a Post-LN model for `layernorm-to-rmsnorm` — but never break one);
//! * `post-to-pre` then `pre-to-post` (on Post stacks), and the reverse (on Pre stacks), give the text form back.
//!
//! `PROPTEST_CASES` sets the number of stacks (default 64; each case runs tract twice, about 30 ms).

mod common;

use common::forms::{Form, LN};
use common::stacks::{NormSpec, Placement, StackSpec, UnitSpec, residual_stack};
use normshift::analysis::residual::analyze;
use normshift::ir::index::GraphIndex;
use normshift::ir::text::TextOptions;
use normshift::passes::{PassContext, PassError, by_name, run_one};
use normshift::runtime::RuntimeKind;
use normshift::verify::{InputSource, ModelRef, RuntimeChoice, Tolerance, VerifyBy, verify_pair};
use normshift::{Model, io};
use proptest::prelude::*;
use prost::Message;

fn form(opset: i64) -> impl Strategy<Value = Form> {
    (
        any::<bool>(),
        0u8..3,
        any::<bool>(),
        prop_oneof![Just(&[-1i64][..]), Just(&[2i64][..])],
        prop_oneof![Just(&[][..]), Just(&[1i64][..])],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(rms, division, square_by_mul, axes, eps_dims, casts, gemma)| Form {
                rms,
                division,
                square_by_mul,
                axes_input: opset >= 18,
                axes,
                eps_dims,
                casts,
                gemma_scale: rms && gemma,
                opset,
                ..LN
            },
        )
}

fn numbers(len: usize, range: std::ops::Range<f32>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(range, len)
}

fn norm(opset: i64, hidden: usize) -> impl Strategy<Value = NormSpec> {
    (
        form(opset),
        prop_oneof![Just(1e-5f32), Just(1e-6), Just(1e-12), Just(1e-2)],
        numbers(hidden, 0.5..1.5),
        numbers(hidden, -0.5..0.5),
    )
        .prop_map(|(form, eps, gamma, beta)| NormSpec {
            form,
            eps,
            gamma,
            beta,
        })
}

fn unit(opset: i64, hidden: usize) -> impl Strategy<Value = UnitSpec> {
    (
        norm(opset, hidden),
        numbers(hidden * hidden, -1.0..1.0),
        numbers(hidden * hidden, -1.0..1.0),
    )
        .prop_map(|(norm, w1, w2)| UnitSpec { norm, w1, w2 })
}

fn stack() -> impl Strategy<Value = StackSpec> {
    (
        prop_oneof![Just(Placement::Post), Just(Placement::Pre)],
        prop_oneof![Just(17i64), Just(18)],
        2usize..9,
        1usize..5,
        1usize..5,
    )
        .prop_flat_map(|(placement, opset, hidden, seq, units)| {
            (
                prop::collection::vec(unit(opset, hidden), units),
                norm(opset, hidden),
            )
                .prop_map(move |(units, outer)| StackSpec {
                    placement,
                    hidden,
                    seq,
                    units,
                    outer,
                    opset,
                    shared_parameters: false,
                })
        })
}

fn load(bytes: &[u8]) -> Model {
    io::load_bytes(
        bytes.to_vec().into(),
        std::path::Path::new("stack.onnx"),
        std::path::Path::new("."),
    )
    .expect("a stack we built loads")
}

fn text(model: &Model) -> String {
    model.to_text(TextOptions::default())
}

/// Applies each pass in turn; a pass that refuses the model leaves it as it was.
fn run_passes(model: &mut Model, names: &[&str]) -> Result<(), TestCaseError> {
    for name in names {
        let pass = by_name(name).expect("a catalogued pass");
        let before = model.clone();
        match run_one(model, pass.as_ref(), &PassContext::default()) {
            Ok(_) => {}
            Err(PassError::Refused { .. }) => *model = before,
            Err(e) => return Err(TestCaseError::fail(format!("{name}: {e}"))),
        }
    }
    Ok(())
}

/// The lines only in `a` (`-`) and only in `b` (`+`).
fn line_diff(a: &str, b: &str) -> String {
    let only = |x: &str, y: &str, mark: char| {
        let ys: std::collections::HashSet<&str> = y.lines().collect();
        x.lines()
            .filter(|l| !ys.contains(l))
            .map(|l| format!("{mark} {l}\n"))
            .collect::<String>()
    };
    only(a, b, '-') + &only(b, a, '+')
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        // Failing cases are kept here and replayed first on every run.
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/properties.proptest-regressions"),
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_stacks(spec in stack()) {
        let bytes = residual_stack(&spec);
        let model = load(&bytes);

        // export → import is the identity
        let again = model.to_proto().expect("an imported model exports").encode_to_vec();
        prop_assert!(again == bytes, "export differs from the input");

        // analysis finds what was built
        let analysis = analyze(&GraphIndex::new(&model.graph));
        let expected = match spec.placement { Placement::Post => "post", Placement::Pre => "pre" };
        prop_assert_eq!(analysis.placement.as_str(), expected);
        prop_assert_eq!(analysis.unit_count, spec.units.len());
        prop_assert_eq!(analysis.norm_count, spec.units.len() + 1);

        // the exact passes keep tract's outputs
        let mut rewritten = model.clone();
        run_passes(&mut rewritten, &[
            "fuse-layernorm", "fuse-rmsnorm", "fold-norm-affine", "layernorm-to-rmsnorm", "cleanup",
        ])?;
        let here = std::path::Path::new(".");
        let a = ModelRef { model: &model, dir: here, label: std::path::Path::new("original") };
        let b = ModelRef { model: &rewritten, dir: here, label: std::path::Path::new("rewritten") };
        let source = InputSource::Seeds { seeds: vec![0], dims: Default::default() };
        let report = verify_pair(&a, &b, &source, Tolerance::default(), RuntimeChoice::Only(RuntimeKind::Tract), VerifyBy::Model)
            .map_err(|e| TestCaseError::fail(format!("tract: {e}")))?;
        let worst = report.runs.iter().flat_map(|r| &r.outputs).map(|o| o.max_abs).fold(0.0, f64::max);
        prop_assert!(report.ok, "exact passes changed the outputs by up to {worst}\n{}", text(&rewritten));

        // the placement rewrites are each other's inverse
        let (there, back) = match spec.placement {
            Placement::Post => ("post-to-pre", "pre-to-post"),
            Placement::Pre => ("pre-to-post", "post-to-pre"),
        };
        let mut moved = model.clone();
        run_one(&mut moved, by_name(there).expect("catalogued").as_ref(), &PassContext::default())
            .map_err(|e| TestCaseError::fail(format!("{there}: {e}")))?;
        run_one(&mut moved, by_name(back).expect("catalogued").as_ref(), &PassContext::default())
            .map_err(|e| TestCaseError::fail(format!("{back}: {e}")))?;
        let (got, want) = (text(&moved), text(&model));
        prop_assert!(got == want, "{there} then {back} differs:\n{}", line_diff(&want, &got));
    }
}
