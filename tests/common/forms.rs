//! Decomposed norms written node by node, in every form the exporters use, for analysis and fusion tests.
#![allow(dead_code)]

use super::*;
use normshift::onnx::{
    AttributeProto, GraphProto, NodeProto, TensorProto, attribute_proto::AttributeType,
};

/// How to write the decomposed norm.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    pub rms: bool,
    /// 0: Div(d, s); 1: Mul(d, Reciprocal(s)); 2: Mul(d, Div(1, s))
    pub division: u8,
    pub square_by_mul: bool,
    /// ReduceMean axes as an input (opset 18) rather than an attribute.
    pub axes_input: bool,
    pub axes: &'static [i64],
    pub keepdims: i64,
    pub eps_dims: &'static [i64],
    pub scale_dims: &'static [i64],
    pub casts: bool,
    pub gemma_scale: bool,
    /// fp16 input, output and parameters, statistics in float32 (requires `casts`).
    pub half: bool,
    /// Default-domain opset of the model (18 and up need `axes_input`).
    pub opset: i64,
}

pub const LN: Form = Form {
    rms: false,
    division: 0,
    square_by_mul: false,
    axes_input: false,
    axes: &[-1],
    keepdims: 1,
    eps_dims: &[],
    scale_dims: &[4],
    casts: false,
    gemma_scale: false,
    half: false,
    opset: 17,
};
pub const RMS: Form = Form {
    rms: true,
    division: 1,
    ..LN
};

pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}
pub fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}
pub fn with(mut n: NodeProto, attrs: Vec<AttributeProto>) -> NodeProto {
    n.attribute = attrs;
    n
}
pub fn filled(name: &str, dims: &[i64], value: f32) -> TensorProto {
    let count: i64 = dims.iter().product();
    f32_tensor(name, dims, &vec![value; count as usize])
}

/// `y = Norm(x)` over x: f32[2, 3, 4], written in `form`.
pub fn norm_graph(f: Form) -> Vec<u8> {
    let bytes = tiny_model(|g: &mut GraphProto| {
        let io_info = if f.half { f16_info } else { f32_info };
        let param = if f.half { filled_f16 } else { filled };
        g.input = vec![io_info("x", &[2, 3, 4])];
        g.output = vec![io_info("y", &[2, 3, 4])];
        g.initializer = vec![
            filled("two", &[], 2.0),
            filled("one", &[], 1.0),
            filled("eps", f.eps_dims, 1e-6),
            param("gamma", f.scale_dims, 1.5),
            param("beta", &[4], 0.25),
            TensorProto {
                name: Some("axes".into()),
                dims: vec![f.axes.len() as i64],
                data_type: Some(7),
                int64_data: f.axes.to_vec(),
                ..Default::default()
            },
        ];
        let mut nodes = Vec::new();
        let mean = |input: &str, out: &str| {
            if f.axes_input {
                with(
                    node("ReduceMean", &[input, "axes"], &[out]),
                    vec![int("keepdims", f.keepdims)],
                )
            } else {
                with(
                    node("ReduceMean", &[input], &[out]),
                    vec![ints("axes", f.axes), int("keepdims", f.keepdims)],
                )
            }
        };
        let x = if f.casts {
            nodes.push(with(node("Cast", &["x"], &["xf"]), vec![int("to", 1)]));
            "xf"
        } else {
            "x"
        };
        let centred = if f.rms {
            x
        } else {
            nodes.push(mean(x, "m"));
            nodes.push(node("Sub", &[x, "m"], &["d"]));
            "d"
        };
        nodes.push(if f.square_by_mul {
            node("Mul", &[centred, centred], &["sq"])
        } else {
            node("Pow", &[centred, "two"], &["sq"])
        });
        nodes.push(mean("sq", "v"));
        nodes.push(node("Add", &["v", "eps"], &["ve"]));
        nodes.push(node("Sqrt", &["ve"], &["s"]));
        match f.division {
            0 => nodes.push(node("Div", &[centred, "s"], &["n"])),
            1 => {
                nodes.push(node("Reciprocal", &["s"], &["r"]));
                nodes.push(node("Mul", &[centred, "r"], &["n"]));
            }
            _ => {
                nodes.push(node("Div", &["one", "s"], &["r"]));
                nodes.push(node("Mul", &["r", centred], &["n"]));
            }
        }
        let n = if f.casts {
            let to = if f.half { 10 } else { 1 };
            nodes.push(with(node("Cast", &["n"], &["nc"]), vec![int("to", to)]));
            "nc"
        } else {
            "n"
        };
        let gamma = if f.gemma_scale {
            nodes.push(node("Add", &["gamma", "one"], &["g1"]));
            "g1"
        } else {
            "gamma"
        };
        nodes.push(node("Mul", &[gamma, n], &["scaled"]));
        nodes.push(node(
            if f.rms { "Identity" } else { "Add" },
            if f.rms {
                &["scaled"][..]
            } else {
                &["scaled", "beta"][..]
            },
            &["y"],
        ));
        g.node = nodes;
    });
    with_opset(bytes, f.opset)
}

pub fn filled_f16(name: &str, dims: &[i64], value: f32) -> TensorProto {
    let count: i64 = dims.iter().product();
    let raw: Vec<u8> = (0..count)
        .flat_map(|_| half::f16::from_f32(value).to_le_bytes())
        .collect();
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(10),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// `norm_graph(form)` with the variance also read outside the pattern (a graph output `leak`).
pub fn with_leaked_variance(form: Form) -> Vec<u8> {
    use prost::Message;
    let mut model = normshift::io::load_bytes(norm_graph(form).into(), "n".as_ref(), ".".as_ref())
        .unwrap()
        .to_proto()
        .unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.node.push(node("Neg", &["v"], &["leak"]));
    graph.output.push(f32_info("leak", &[2, 3, 1]));
    model.encode_to_vec()
}
