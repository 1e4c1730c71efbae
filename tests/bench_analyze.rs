//! Benchmark, not a test: how much `analyze` adds to loading a model, and how it grows with depth.
//!
//!     python3 models/make_fixtures.py models/big --bert-base [--layers 24|48]
//!     cargo test --release --test bench_analyze -- --ignored --nocapture
//!
//! Reads every `models/big/*.onnx`; prints the best of 20 runs of each stage. It asserts nothing about time, but
//! that what it timed is the right answer: a BERT of L layers is Post-LN with 2L units and 2L + 1 norms.

use std::time::{Duration, Instant};

use normshift::analysis::analyze;
use normshift::ir::index::GraphIndex;

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let value = f();
        best = best.min(start.elapsed());
        last = Some(value);
    }
    (best, last.expect("at least one run"))
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture on models made by models/make_fixtures.py --bert-base"]
fn analyze_cost_against_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/big");
    let mut models: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    println!("| model | nodes | load | analyze | analyze / load | units |");
    println!("|---|---|---|---|---|---|");
    for path in models {
        let (load, model) = best(20, || {
            normshift::io::load(&path).expect("benchmark model loads")
        });
        let (time, analysis) = best(20, || analyze(&GraphIndex::new(&model.graph)));
        let (index_time, _) = best(20, || {
            GraphIndex::new(&model.graph).use_count(model.graph.outputs[0])
        });
        let (order_time, _) = best(20, || model.graph.ops_in_order().map(|o| o.len()));
        let (norms_time, _) = best(20, || {
            normshift::analysis::find_norms(&GraphIndex::new(&model.graph)).len()
        });
        eprintln!(
            "  index {:.2} ms, topological order {:.2} ms, index + norms {:.2} ms",
            index_time.as_secs_f64() * 1e3,
            order_time.as_secs_f64() * 1e3,
            norms_time.as_secs_f64() * 1e3
        );
        println!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1}% | {} |",
            path.file_name().unwrap_or_default().to_string_lossy(),
            model.graph.op_count(),
            load.as_secs_f64() * 1e3,
            time.as_secs_f64() * 1e3,
            100.0 * time.as_secs_f64() / load.as_secs_f64(),
            analysis.unit_count
        );
        let layers = analysis.unit_count / 2;
        assert!(layers > 0, "{}: no units found", path.display());
        assert_eq!(
            (analysis.placement.as_str(), analysis.norm_count),
            ("post", 2 * layers + 1),
            "{}",
            path.display()
        );
    }
}
