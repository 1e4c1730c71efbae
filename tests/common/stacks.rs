//! Residual stacks built from decomposed norms: `Post` units `x' = N(x + F(x))` after an embedding norm, or
//! `Pre` units `x' = x + F(N(x))` ending in a final norm, with `F = MatMul → Relu → MatMul`. Every norm is
//! written node by node in its own [`Form`], with its own ε, scale and shift. Used by the property tests
//! (random stacks) and by the size tests (very deep stacks).
#![allow(dead_code)]

use super::forms::{Form, int, ints, with};
use super::*;
use normshift::onnx::{GraphProto, NodeProto, TensorProto};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Post,
    Pre,
}

/// One decomposed norm: its form and its numbers (`gamma`, `beta` of length `hidden`).
#[derive(Clone, Debug)]
pub struct NormSpec {
    pub form: Form,
    pub eps: f32,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// One residual unit's norm and branch weights (`w1`, `w2` of length `hidden²`).
#[derive(Clone, Debug)]
pub struct UnitSpec {
    pub norm: NormSpec,
    pub w1: Vec<f32>,
    pub w2: Vec<f32>,
}

#[derive(Clone, Debug)]
pub struct StackSpec {
    pub placement: Placement,
    pub hidden: usize,
    pub seq: usize,
    pub units: Vec<UnitSpec>,
    /// The embedding norm (post) or the final norm (pre).
    pub outer: NormSpec,
    /// Default-domain opset (18 and up need forms with `axes_input`).
    pub opset: i64,
    /// All units read the parameters of unit 0 (a small file for a very deep stack).
    pub shared_parameters: bool,
}

struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    hidden: i64,
}

impl Builder {
    fn constant(&mut self, t: TensorProto) {
        self.initializers.push(t);
    }

    /// Writes `output = Norm(input)` with every name prefixed by `p`; parameters are read from `params`. Returns
    /// what the statistics read: `input`, or the output of the form's leading Cast.
    fn norm(
        &mut self,
        spec: &NormSpec,
        p: &str,
        params: &str,
        input: &str,
        output: &str,
    ) -> String {
        let f = spec.form;
        let h = self.hidden;
        let name = |s: &str| format!("{p}{s}");
        let param = |s: &str| format!("{params}{s}");
        if p == params {
            // Only what the form reads: an exporter leaves no unused initializer behind.
            if !f.square_by_mul {
                self.constant(f32_tensor(&param("two"), &[], &[2.0]));
            }
            if f.division == 2 || f.gemma_scale {
                self.constant(f32_tensor(&param("one"), &[], &[1.0]));
            }
            let eps_count: i64 = f.eps_dims.iter().product();
            self.constant(f32_tensor(
                &param("eps"),
                f.eps_dims,
                &vec![spec.eps; eps_count as usize],
            ));
            self.constant(f32_tensor(&param("gamma"), &[h], &spec.gamma));
            if !f.rms {
                self.constant(f32_tensor(&param("beta"), &[h], &spec.beta));
            }
            if f.axes_input {
                self.constant(TensorProto {
                    name: Some(param("axes")),
                    dims: vec![f.axes.len() as i64],
                    data_type: Some(7),
                    int64_data: f.axes.to_vec(),
                    ..Default::default()
                });
            }
        }
        let mean = |input: &str, out: &str| {
            if f.axes_input {
                with(
                    node("ReduceMean", &[input, &param("axes")], &[out]),
                    vec![int("keepdims", 1)],
                )
            } else {
                with(
                    node("ReduceMean", &[input], &[out]),
                    vec![ints("axes", f.axes), int("keepdims", 1)],
                )
            }
        };
        let mut x = input.to_string();
        if f.casts {
            self.nodes.push(with(
                node("Cast", &[&x], &[&name("xf")]),
                vec![int("to", 1)],
            ));
            x = name("xf");
        }
        let statistics_input = x.clone();
        let centred = if f.rms {
            x.clone()
        } else {
            self.nodes.push(mean(&x, &name("m")));
            self.nodes
                .push(node("Sub", &[&x, &name("m")], &[&name("d")]));
            name("d")
        };
        self.nodes.push(if f.square_by_mul {
            node("Mul", &[&centred, &centred], &[&name("sq")])
        } else {
            node("Pow", &[&centred, &param("two")], &[&name("sq")])
        });
        self.nodes.push(mean(&name("sq"), &name("v")));
        self.nodes
            .push(node("Add", &[&name("v"), &param("eps")], &[&name("ve")]));
        self.nodes.push(node("Sqrt", &[&name("ve")], &[&name("s")]));
        match f.division {
            0 => self
                .nodes
                .push(node("Div", &[&centred, &name("s")], &[&name("n")])),
            1 => {
                self.nodes
                    .push(node("Reciprocal", &[&name("s")], &[&name("r")]));
                self.nodes
                    .push(node("Mul", &[&centred, &name("r")], &[&name("n")]));
            }
            _ => {
                self.nodes
                    .push(node("Div", &[&param("one"), &name("s")], &[&name("r")]));
                self.nodes
                    .push(node("Mul", &[&name("r"), &centred], &[&name("n")]));
            }
        }
        let mut n = name("n");
        if f.casts {
            self.nodes.push(with(
                node("Cast", &[&n], &[&name("nc")]),
                vec![int("to", 1)],
            ));
            n = name("nc");
        }
        let mut gamma = param("gamma");
        if f.gemma_scale {
            self.nodes
                .push(node("Add", &[&gamma, &param("one")], &[&name("g1")]));
            gamma = name("g1");
        }
        if f.rms {
            self.nodes.push(node("Mul", &[&gamma, &n], &[output]));
        } else {
            self.nodes
                .push(node("Mul", &[&gamma, &n], &[&name("scaled")]));
            self.nodes
                .push(node("Add", &[&name("scaled"), &param("beta")], &[output]));
        }
        statistics_input
    }

    /// `output = MatMul(Relu(MatMul(input, w1)), w2)`.
    fn branch(&mut self, unit: &UnitSpec, p: &str, params: &str, input: &str, output: &str) {
        let h = self.hidden;
        if p == params {
            self.constant(f32_tensor(&format!("{params}w1"), &[h, h], &unit.w1));
            self.constant(f32_tensor(&format!("{params}w2"), &[h, h], &unit.w2));
        }
        let name = |s: &str| format!("{p}{s}");
        self.nodes.push(node(
            "MatMul",
            &[input, &format!("{params}w1")],
            &[&name("h1")],
        ));
        self.nodes.push(node("Relu", &[&name("h1")], &[&name("a")]));
        self.nodes.push(node(
            "MatMul",
            &[&name("a"), &format!("{params}w2")],
            &[output],
        ));
    }
}

/// The model described by `spec`: input `x` and output `y`, both f32[1, seq, hidden].
pub fn residual_stack(spec: &StackSpec) -> Vec<u8> {
    let mut b = Builder {
        nodes: Vec::new(),
        initializers: Vec::new(),
        hidden: spec.hidden as i64,
    };
    let mut x = "x".to_string();
    if spec.placement == Placement::Post {
        b.norm(&spec.outer, "emb_", "emb_", &x, "emb_out");
        x = "emb_out".into();
    }
    for (k, unit) in spec.units.iter().enumerate() {
        let p = format!("u{k}_");
        let params = if spec.shared_parameters {
            "u0_".to_string()
        } else {
            p.clone()
        };
        let sum = format!("{p}sum");
        match spec.placement {
            Placement::Post => {
                b.branch(unit, &p, &params, &x, &format!("{p}f"));
                b.nodes.push(node("Add", &[&x, &format!("{p}f")], &[&sum]));
                let next = format!("{p}out");
                b.norm(
                    &unit.norm,
                    &format!("{p}n_"),
                    &format!("{params}n_"),
                    &sum,
                    &next,
                );
                x = next;
            }
            Placement::Pre => {
                let normed = format!("{p}normed");
                // With a (float → float) Cast, the skip shares it with the norm, as exporters write it: a
                // Post-LN graph cannot tell whether the skip read the Cast or its input, so `post-to-pre`
                // chooses the Cast (see passes/post_to_pre.rs), and the round trip holds for this form.
                let skip = b.norm(
                    &unit.norm,
                    &format!("{p}n_"),
                    &format!("{params}n_"),
                    &x,
                    &normed,
                );
                b.branch(unit, &p, &params, &normed, &format!("{p}f"));
                b.nodes
                    .push(node("Add", &[&skip, &format!("{p}f")], &[&sum]));
                x = sum;
            }
        }
    }
    match spec.placement {
        Placement::Post => b.nodes.push(node("Identity", &[&x], &["y"])),
        Placement::Pre => {
            b.norm(&spec.outer, "final_", "final_", &x, "y");
        }
    }
    let dims = [1, spec.seq as i64, spec.hidden as i64];
    let bytes = tiny_model(|g: &mut GraphProto| {
        g.input = vec![f32_info("x", &dims)];
        g.output = vec![f32_info("y", &dims)];
        g.initializer = std::mem::take(&mut b.initializers);
        g.node = std::mem::take(&mut b.nodes);
    });
    with_opset(bytes, spec.opset)
}
