//! Seeded, valid inputs for a model, derived from its graph.
//!
//! The sizes of symbolic dimensions are chosen so that the inputs agree with each other and with the graph:
//! one size per symbol (every input with `sequence` gets the same), a dimension written as an expression of
//! others (`past_sequence_length + sequence_length`, as KV-cache exports declare their attention mask) gets the
//! value of that expression, and the channel axis of an image input gets what the weights of the `Conv` reading
//! it expect (its spatial axes at least the kernel).

use std::collections::{HashMap, VecDeque};

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::VerifyError;
use crate::ir::index::GraphIndex;
use crate::ir::{InputSlot, Model, ValueId};
use crate::onnx::{Dim, tensor_type};
use crate::runtime::{ElemType, Named, TensorData, Values};

/// Sizes for symbolic dimensions: by name when given, otherwise `leading` for a leading (batch) axis and `other`
/// for any other (sequence-like) axis: by default 2 and 7, 7 being deliberately not a power of two and not a
/// size the exporter traced with.
#[derive(Debug, Clone)]
pub struct DimSizes {
    pub by_name: HashMap<String, usize>,
    pub leading: usize,
    pub other: usize,
}

impl Default for DimSizes {
    fn default() -> Self {
        DimSizes {
            by_name: HashMap::new(),
            leading: Self::LEADING,
            other: Self::OTHER,
        }
    }
}

impl DimSizes {
    pub const LEADING: usize = 2;
    pub const OTHER: usize = 7;
}

/// Where a generated input's dimension got its size: what a refusal of that size names.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    /// The file declares the number.
    File,
    /// `--dim NAME=SIZE` names the symbol.
    Given(String),
    /// The graph implies the symbol's size (`how`: an expression of other symbols, an op's contract).
    Graph { symbol: String, how: String },
    /// Nothing names the symbol: the size for a leading axis or any other (`None`: an unknown dimension).
    Default(Option<String>),
}

impl Origin {
    /// `axis 1: `hidden` = 1099511627776, as given`, for a dimension of size `n`.
    fn describe(&self, n: usize) -> String {
        match self {
            Origin::File => format!("{n}, declared by the file"),
            Origin::Given(s) => format!("`{s}` = {n}, as given"),
            Origin::Graph { symbol, how } => format!("`{symbol}` = {n}, {how}"),
            Origin::Default(Some(s)) => {
                format!("`{s}` = {n}, the size for symbols given no size")
            }
            Origin::Default(None) => format!("{n}, the size for an unknown dimension"),
        }
    }
}

/// The sizes of one input set's symbols, each chosen once (so that inputs sharing `sequence` agree), from the
/// user's [`DimSizes`] and what the graph implies.
struct Sizer<'d> {
    dims: &'d DimSizes,
    chosen: HashMap<String, (usize, Origin)>,
}

impl<'d> Sizer<'d> {
    fn new(dims: &'d DimSizes) -> Self {
        Sizer {
            dims,
            chosen: HashMap::new(),
        }
    }

    /// The size of `dim` at `axis`; `hint` is what the graph says the axis must be when the symbol is not named,
    /// `derived` what it says of symbols (an expression of others, or a number).
    fn size(
        &mut self,
        dim: &Dim,
        axis: usize,
        hint: Option<usize>,
        derived: &HashMap<String, String>,
    ) -> (usize, Origin) {
        let default = hint.unwrap_or(if axis == 0 {
            self.dims.leading
        } else {
            self.dims.other
        });
        match dim {
            // A number past usize (on a 32-bit machine) becomes one whose product overflows: refused as such.
            Dim::Fixed(n) if *n >= 0 => (usize::try_from(*n).unwrap_or(usize::MAX), Origin::File),
            Dim::Symbol(s) => self.symbol(s, default, derived),
            _ => (default, Origin::Default(None)),
        }
    }

    fn symbol(
        &mut self,
        s: &str,
        default: usize,
        derived: &HashMap<String, String>,
    ) -> (usize, Origin) {
        if let Some(&n) = self.dims.by_name.get(s) {
            return (n, Origin::Given(s.into()));
        }
        if let Some(known) = self.chosen.get(s) {
            return known.clone();
        }
        let text = derived.get(s).map_or(s, String::as_str);
        let graph = |how: String| Origin::Graph {
            symbol: s.into(),
            how,
        };
        let chosen = if let Ok(n) = text.trim().parse::<usize>() {
            (n, graph("as the graph's ops require".into()))
        } else if let Some(n) = expression::evaluate(text, &mut |name| {
            i64::try_from(self.named(name)).unwrap_or(i64::MAX)
        }) {
            // An expression of other symbols: each of them sized as a sequence-like axis unless named.
            (usize::try_from(n).unwrap_or(0), graph(format!("= {text}")))
        } else {
            (default, Origin::Default(Some(s.into())))
        };
        self.chosen.insert(s.into(), chosen.clone());
        chosen
    }

    /// The size of a symbol an expression names: given, chosen already, or a sequence-like axis's.
    fn named(&mut self, name: &str) -> usize {
        if let Some(&n) = self.dims.by_name.get(name) {
            return n;
        }
        let other = self.dims.other;
        self.chosen
            .entry(name.into())
            .or_insert_with(|| (other, Origin::Default(Some(name.into()))))
            .0
    }
}

/// `input `x` of shape [1, 1099511627776] (axis 1: 1099511627776, declared by the file)`: the input and its
/// largest axis, which is what makes it too large.
fn describe_input(name: &str, shape: &[usize], origins: &[Origin]) -> String {
    let largest = (0..shape.len()).max_by_key(|&a| shape[a]);
    let why = largest
        .and_then(|a| {
            Some(format!(
                " (axis {a}: {})",
                origins.get(a)?.describe(shape[a])
            ))
        })
        .unwrap_or_default();
    format!("input `{name}` of shape {shape:?}{why}")
}

/// Ops that move or reshape integer indices without changing their values.
const INDEX_PRESERVING: &[&str] = &[
    "Cast",
    "Reshape",
    "Unsqueeze",
    "Squeeze",
    "Flatten",
    "Identity",
    "Expand",
];

/// The smallest row count among the constant tables that `input` indexes through `Gather` (following
/// value-preserving ops), if it indexes any.
fn gather_bound(ix: &GraphIndex, input: ValueId) -> Option<i64> {
    let g = ix.graph;
    let mut bound: Option<i64> = None;
    let mut queue = VecDeque::from([input]);
    let mut seen = std::collections::HashSet::new();
    while let Some(v) = queue.pop_front() {
        if !seen.insert(v) {
            continue;
        }
        for &(node, slot) in ix.consumers(v) {
            let Some(op) = g.graph[node].op() else {
                continue;
            };
            match (op.op_type(), slot) {
                ("Gather", InputSlot::Operand(1)) => {
                    let table = ix.inputs(node).first().copied().flatten();
                    let Some(t) = table.and_then(|t| g.initializer(t)) else {
                        continue;
                    };
                    let rank = t.dims().len() as i64;
                    let axis = op.attribute("axis").map(|a| a.i()).unwrap_or(0);
                    let axis = if axis < 0 { axis + rank } else { axis };
                    if let Some(&rows) = usize::try_from(axis).ok().and_then(|a| t.dims().get(a)) {
                        bound = Some(bound.map_or(rows, |b| b.min(rows)));
                    }
                }
                (ty, InputSlot::Operand(0)) if INDEX_PRESERVING.contains(&ty) => {
                    queue.extend(g.graph[node].outputs.iter().flatten().copied());
                }
                _ => {}
            }
        }
    }
    bound
}

/// For each runtime input that indexes constant tables through `Gather`, the smallest row count: in the main
/// graph, or inside the subgraph bodies that read the input (a merged decoder reads its token ids only in its
/// `If` branches).
fn row_bounds(model: &Model, ix: &GraphIndex) -> HashMap<ValueId, i64> {
    let g = &model.graph;
    let mut bounds: HashMap<ValueId, i64> = g
        .runtime_inputs()
        .filter_map(|i| Some((i, gather_bound(ix, i)?)))
        .collect();
    let mut tighten = |input: ValueId, rows: i64| {
        let b = bounds.entry(input).or_insert(rows);
        *b = (*b).min(rows);
    };
    // A body that cannot be imported is the runtime's to report; here it only bounds nothing.
    let _ = g.visit_bodies(
        &crate::ir::subgraph::Scope::default(),
        "",
        &mut |_, body| -> Result<(), crate::ir::ValidationError> {
            let bix = GraphIndex::new(body);
            for input in g.runtime_inputs() {
                if let Some(inner) = body.value_id(&g.value(input).name)
                    && body.captured.contains(&inner)
                    && let Some(rows) = gather_bound(&bix, inner)
                {
                    tighten(input, rows);
                }
            }
            Ok(())
        },
    );
    bounds
}

/// Elementwise ops that keep their first operand's layout (a pixel normalization `(x − m) / s` on the way to
/// the patch `Conv`, a Cast to the weights' type).
const ELEMENTWISE_ON_THE_WAY: &[&str] = &["Cast", "Identity", "Sub", "Div", "Mul", "Add", "Clip"];

/// The input's `Conv` (its data operand, through elementwise ops), with the weight it convolves with. Shape
/// queries and other readers of the input are passed over.
fn conv_weight<'g>(ix: &GraphIndex<'g>, input: ValueId) -> Option<(&'g crate::ir::Tensor, i64)> {
    let g = ix.graph;
    let mut frontier = vec![input];
    for _ in 0..8 {
        let mut next = Vec::new();
        for v in frontier {
            for &(node, slot) in ix.consumers(v) {
                let Some(op) = g.graph[node].op().filter(|op| op.domain().is_empty()) else {
                    continue;
                };
                match (op.op_type(), slot) {
                    ("Conv", InputSlot::Operand(0)) => {
                        let w = ix.inputs(node).get(1).copied().flatten()?;
                        let group = op.attribute("group").map(|a| a.i()).unwrap_or(1).max(1);
                        return g.initializer(w).map(|t| (t, group));
                    }
                    (ty, InputSlot::Operand(_)) if ELEMENTWISE_ON_THE_WAY.contains(&ty) => {
                        next.extend(g.graph[node].outputs.first().copied().flatten());
                    }
                    _ => {}
                }
            }
        }
        if next.is_empty() {
            return None;
        }
        frontier = next;
    }
    None
}

/// What a `Conv` reading the input requires of `axis`: its input channels on axis 1 (the weight's second
/// dimension times `group`), at least its kernel on the spatial axes.
fn conv_hint(ix: &GraphIndex, input: ValueId, axis: usize, other: usize) -> Option<usize> {
    let (w, group) = conv_weight(ix, input)?;
    let dims = w.dims();
    let size = match axis {
        0 => return None,
        1 => dims.get(1)?.checked_mul(group)?,
        a => (*dims.get(a)?).max(i64::try_from(other).unwrap_or(i64::MAX)),
    };
    usize::try_from(size).ok()
}

/// The symbol a value declares at `axis`, if it declares one there.
fn symbol_at(ix: &GraphIndex, v: ValueId, axis: usize) -> Option<String> {
    let (_, shape) = ix.graph.value(v).ty().and_then(tensor_type)?;
    match shape?.get(axis)? {
        Dim::Symbol(s) => Some(s.clone()),
        _ => None,
    }
}

/// The width (last dimension) of a projection's output: `MatMul(x, W)` with a constant `W`, through a bias
/// `Add`.
fn projection_width(ix: &GraphIndex, v: ValueId, depth: usize) -> Option<i64> {
    let (node, op) = ix.producer_op(v)?;
    let inputs = ix.inputs(node);
    match op.op_type() {
        "MatMul" => ix
            .graph
            .initializer(inputs.get(1).copied().flatten()?)?
            .dims()
            .last()
            .copied(),
        // onnxruntime's int4 MatMul keeps its output width as an attribute (the weight is packed in blocks).
        "MatMulNBits" => op.attribute("N").map(|a| a.i()),
        "Add" if depth > 0 => inputs
            .iter()
            .flatten()
            .filter(|&&i| ix.graph.initializer(i).is_none())
            .find_map(|&i| projection_width(ix, i, depth - 1)),
        _ => None,
    }
}

/// What a KV-cache attention op's contract fixes of its graph inputs' symbols. onnxruntime's
/// `GroupQueryAttention` reads `past_key`/`past_value` as `[batch, kv_heads, past, head_size]` and writes
/// `present` over `past + new` positions, the length of the attention mask: so the past's last symbol is the
/// head size (the query projection's width over the heads it packs) and the present's length symbol is the
/// past's plus the new tokens' (the sequence axis of the token ids).
fn attention_dims(ix: &GraphIndex, bounds: &HashMap<ValueId, i64>) -> HashMap<String, String> {
    let g = ix.graph;
    let mut derived = HashMap::new();
    let tokens = g.runtime_inputs().find(|i| bounds.contains_key(i));
    for &node in ix.ops() {
        let Some(op) = g.graph[node].op() else {
            continue;
        };
        if op.op_type() != "GroupQueryAttention" {
            continue;
        }
        let inputs = ix.inputs(node);
        let input = |k: usize| inputs.get(k).copied().flatten();
        let attr = |name: &str| op.attribute(name).map(|a| a.i());
        let (Some(heads), Some(kv_heads)) = (attr("num_heads"), attr("kv_num_heads")) else {
            continue;
        };
        let packed = input(1).is_none();
        let head_size = input(0)
            .and_then(|q| projection_width(ix, q, 2))
            .and_then(|w| {
                w.checked_div(if packed {
                    heads.checked_add(kv_heads.checked_mul(2)?)?
                } else {
                    heads
                })
            });
        for k in [3, 4] {
            if let (Some(past), Some(size)) = (input(k), head_size)
                && g.is_runtime_input(past)
                && let Some(sym) = symbol_at(ix, past, 3)
            {
                derived.insert(sym, size.to_string());
            }
        }
        let past_len = input(3)
            .filter(|&p| g.is_runtime_input(p))
            .and_then(|p| symbol_at(ix, p, 2));
        let new_len = tokens.and_then(|t| symbol_at(ix, t, 1));
        let present = g.graph[node].outputs.get(1).copied().flatten();
        if let (Some(present), Some(past), Some(new)) = (present, past_len, new_len)
            && let Some(total) = symbol_at(ix, present, 2)
            && total != past
            && total != new
        {
            derived.insert(total, format!("{past} + {new}"));
        }
    }
    derived
}

/// Whether a boolean input is the condition that selects an `If` branch (optimum's merged decoders switch on
/// `use_cache_branch`).
fn selects_branch(ix: &GraphIndex, id: ValueId) -> bool {
    ix.consumers(id).iter().any(|&(n, slot)| {
        slot == InputSlot::Operand(0)
            && ix.graph.graph[n]
                .op()
                .is_some_and(|op| op.op_type() == "If" && op.domain().is_empty())
    })
}

/// A boolean input: `true` (masks), except for a condition that selects an `If` branch, which alternates with
/// the seed so that two input sets run both branches.
fn bool_input(ix: &GraphIndex, id: ValueId, seed: u64) -> bool {
    !selects_branch(ix, id) || seed.is_multiple_of(2)
}

/// A merged decoder's cache branch attends over the past and the new tokens: its mask covers both, whatever the
/// file declares (optimum's `merge_decoders` declares the mask as `[batch, sequence_length]`, the no-cache
/// branch's shape). The total is what the model declares for its `present` outputs: an expression that adds
/// another symbol to the tokens' sequence symbol. Returns (the sequence symbol, that expression) when the model
/// switches branches on a boolean input and declares such a total.
fn cache_total(ix: &GraphIndex, bounds: &HashMap<ValueId, i64>) -> Option<(String, String)> {
    let g = ix.graph;
    g.runtime_inputs().find(|&i| selects_branch(ix, i))?;
    let tokens = g.runtime_inputs().find(|i| bounds.contains_key(i))?;
    let sequence = symbol_at(ix, tokens, 1)?;
    let total = g.outputs.iter().find_map(|&o| {
        let (_, shape) = g.value(o).ty().and_then(tensor_type)?;
        shape?.into_iter().find_map(|d| match d {
            Dim::Symbol(text)
                if text.contains('+') && expression::names(&text).contains(&sequence) =>
            {
                Some(text)
            }
            _ => None,
        })
    })?;
    Some((sequence, total))
}

/// One input set for `model`, reproducible from `seed`.
pub fn generate_inputs(
    model: &Model,
    seed: u64,
    dims: &mut DimSizes,
) -> Result<Vec<Named>, VerifyError> {
    generate_inputs_within(model, seed, dims, 0).map(|(set, _)| set)
}

/// [`generate_inputs`] when `reserved` bytes of inputs exist already (earlier sets): the set and its bytes.
/// Every input's size is checked against the memory budget ([`crate::limits`]) before it is made.
pub fn generate_inputs_within(
    model: &Model,
    seed: u64,
    dims: &DimSizes,
    reserved: u64,
) -> Result<(Vec<Named>, u64), VerifyError> {
    let g = &model.graph;
    let ix = GraphIndex::new(g);
    let mut rng = StdRng::seed_from_u64(seed);
    let bounds = row_bounds(model, &ix);
    let derived = attention_dims(&ix, &bounds);
    let mut sizer = Sizer::new(dims);
    let mut used = reserved;
    // Sets that select a merged decoder's cache branch size its masks over the past and the new tokens.
    let cache = cache_total(&ix, &bounds).filter(|_| {
        g.runtime_inputs()
            .any(|i| selects_branch(&ix, i) && bool_input(&ix, i, seed))
    });
    let mut out = Vec::new();
    for id in g.runtime_inputs() {
        let value = g.value(id);
        let no_type =
            || VerifyError::Inputs(format!("input `{}` declares no tensor type", value.name));
        let (elem, shape) = value.ty().and_then(tensor_type).ok_or_else(no_type)?;
        let shape = shape.ok_or_else(|| {
            VerifyError::Inputs(format!(
                "input `{}` has no declared rank: give stored inputs",
                value.name
            ))
        })?;
        let is_mask =
            ElemType::from_onnx(elem).is_some_and(|t| !t.is_float()) && !bounds.contains_key(&id);
        let (shape, origins): (Vec<usize>, Vec<Origin>) = shape
            .iter()
            .enumerate()
            .map(|(axis, d)| match (&cache, d) {
                (Some((sequence, total)), Dim::Symbol(sym)) if is_mask && sym == sequence => {
                    sizer.size(&Dim::Symbol(total.clone()), axis, None, &derived)
                }
                _ => {
                    let hint = conv_hint(&ix, id, axis, dims.other);
                    sizer.size(d, axis, hint, &derived)
                }
            })
            .unzip();
        let count = crate::limits::product(shape.iter().map(|&d| d as u64));
        if let Some(ty) = ElemType::from_onnx(elem) {
            let bytes = crate::limits::bytes_of(count, ty.size());
            crate::limits::check(bytes, Some(crate::onnx::elem_type_name(elem)), used, || {
                describe_input(&value.name, &shape, &origins)
            })
            .map_err(|e| VerifyError::Inputs(e.to_string()))?;
            // Within the budget, so within u64.
            used = used.saturating_add(bytes.map_or(u64::MAX, |b| b as u64));
        }
        let len = count.and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
            VerifyError::Inputs(format!("input `{}`: shape {shape:?} overflows", value.name))
        })?;
        let normal = |rng: &mut StdRng| rng.sample::<f32, _>(StandardNormal);
        let values = match ElemType::from_onnx(elem) {
            Some(ElemType::F32) => Values::F32((0..len).map(|_| normal(&mut rng)).collect()),
            Some(ElemType::F16) => {
                Values::F16((0..len).map(|_| f16::from_f32(normal(&mut rng))).collect())
            }
            Some(ElemType::Bf16) => Values::Bf16(
                (0..len)
                    .map(|_| half::bf16::from_f32(normal(&mut rng)))
                    .collect(),
            ),
            Some(ElemType::F64) => {
                Values::F64((0..len).map(|_| rng.sample(StandardNormal)).collect())
            }
            Some(ElemType::I64) => Values::I64(integer_values(bounds.get(&id), len, &mut rng)),
            Some(ElemType::I32) => {
                // Ids of an int32 input stay below i32::MAX whatever the table claims (a table of shape
                // [0, n] holds no rows at all).
                let rows = bounds.get(&id).map(|&r| r.min(i64::from(i32::MAX)));
                Values::I32(
                    integer_values(rows.as_ref(), len, &mut rng)
                        .into_iter()
                        .map(|x| i32::try_from(x).unwrap_or(i32::MAX))
                        .collect(),
                )
            }
            Some(ElemType::Bool) => Values::Bool(vec![bool_input(&ix, id, seed); len]),
            _ => {
                return Err(VerifyError::Inputs(format!(
                    "input `{}` has element type {}, for which no inputs can be generated: give stored inputs",
                    value.name,
                    crate::onnx::elem_type_name(elem)
                )));
            }
        };
        let tensor = TensorData::new(shape, values)
            .map_err(|e| VerifyError::Inputs(format!("input `{}`: {e}", value.name)))?;
        out.push(Named {
            name: value.name.clone(),
            tensor,
        });
    }
    Ok((out, used - reserved))
}

/// Token ids below the indexed table's row count; ones for an integer input that indexes nothing (a mask).
fn integer_values(rows: Option<&i64>, len: usize, rng: &mut StdRng) -> Vec<i64> {
    match rows {
        Some(&rows) if rows > 0 => (0..len).map(|_| rng.random_range(0..rows)).collect(),
        _ => vec![1; len],
    }
}

/// Dimension expressions as exporters write them: identifiers, integers, `+ - * / %` and parentheses.
mod expression {
    /// The value of `text`, each identifier's value from `lookup`; `None` when `text` is a plain identifier or
    /// not an expression at all.
    pub fn evaluate(text: &str, lookup: &mut dyn FnMut(&str) -> i64) -> Option<i64> {
        let tokens = tokenize(text)?;
        if tokens.len() < 2 {
            return None;
        }
        let mut p = Parser {
            tokens,
            at: 0,
            lookup,
        };
        let v = p.sum()?;
        (p.at == p.tokens.len()).then_some(v)
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Name(String),
        Number(i64),
        Op(char),
    }

    /// The identifiers an expression names.
    pub fn names(text: &str) -> Vec<String> {
        tokenize(text)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| match t {
                Token::Name(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    fn tokenize(text: &str) -> Option<Vec<Token>> {
        let mut out = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if c.is_ascii_digit() {
                let mut n = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(d);
                    chars.next();
                }
                out.push(Token::Number(n.parse().ok()?));
            } else if c.is_alphabetic() || c == '_' {
                let mut n = String::new();
                while let Some(&d) = chars
                    .peek()
                    .filter(|d| d.is_alphanumeric() || matches!(d, '_' | '.' | ':'))
                {
                    n.push(d);
                    chars.next();
                }
                out.push(Token::Name(n));
            } else if "+-*/%()".contains(c) {
                out.push(Token::Op(c));
                chars.next();
            } else {
                return None;
            }
        }
        Some(out)
    }

    struct Parser<'a> {
        tokens: Vec<Token>,
        at: usize,
        lookup: &'a mut dyn FnMut(&str) -> i64,
    }

    impl Parser<'_> {
        fn peek_op(&self) -> Option<char> {
            match self.tokens.get(self.at) {
                Some(Token::Op(c)) => Some(*c),
                _ => None,
            }
        }

        fn sum(&mut self) -> Option<i64> {
            let mut v = self.product()?;
            while let Some(op @ ('+' | '-')) = self.peek_op() {
                self.at += 1;
                let r = self.product()?;
                v = if op == '+' {
                    v.checked_add(r)?
                } else {
                    v.checked_sub(r)?
                };
            }
            Some(v)
        }

        fn product(&mut self) -> Option<i64> {
            let mut v = self.atom()?;
            while let Some(op @ ('*' | '/' | '%')) = self.peek_op() {
                self.at += 1;
                let r = self.atom()?;
                v = match op {
                    '*' => v.checked_mul(r)?,
                    '/' => v.checked_div_euclid(r)?,
                    _ => v.checked_rem_euclid(r)?,
                };
            }
            Some(v)
        }

        fn atom(&mut self) -> Option<i64> {
            let token = self.tokens.get(self.at)?.clone();
            self.at += 1;
            match token {
                Token::Number(n) => Some(n),
                Token::Name(name) => Some((self.lookup)(&name)),
                Token::Op('(') => {
                    let v = self.sum()?;
                    (self.tokens.get(self.at) == Some(&Token::Op(')'))).then(|| self.at += 1)?;
                    Some(v)
                }
                Token::Op('-') => self.atom()?.checked_neg(),
                Token::Op(_) => None,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::evaluate;

        #[test]
        fn kv_cache_and_torch_dims_evaluate() {
            let mut sizes = |n: &str| match n {
                "past_sequence_length" => 5,
                "sequence_length" => 3,
                "s1" => 4,
                _ => 0,
            };
            assert_eq!(
                evaluate("past_sequence_length + sequence_length", &mut sizes),
                Some(8)
            );
            assert_eq!(evaluate("2*s1 - 1", &mut sizes), Some(7));
            assert_eq!(evaluate("(s1 + 4) / 3", &mut sizes), Some(2));
            assert_eq!(
                evaluate("sequence_length", &mut sizes),
                None,
                "a plain name is no expression"
            );
            assert_eq!(evaluate("batch size?", &mut sizes), None);
            assert_eq!(evaluate("s1 +", &mut sizes), None);
        }
    }
}
