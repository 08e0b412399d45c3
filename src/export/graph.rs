//! A small ONNX graph builder: named values with their shapes, weights as initializers, and
//! one method per standard operator the exporter uses (opset [`OPSET`]). The messages are
//! `onnx-protobuf`'s (rust-protobuf); nothing here knows about models.

use anyhow::{Result, bail};
use burn::tensor::Tensor;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

/// The operator set the exported graphs use: ONNX Runtime and OpenVINO both read it, and its
/// `ReduceMean` still takes `axes` as an attribute.
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
const IR_VERSION: i64 = 8;
/// The dynamic batch dimension's name.
pub const BATCH: &str = "batch";

/// A value of the graph: its name and shape; a first dimension of −1 is the dynamic batch
/// (or batch · segments).
#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub dims: Vec<i64>,
}

impl Value {
    pub fn dim(&self, i: usize) -> usize {
        self.dims[i] as usize
    }
}

/// An operator attribute.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// Nodes and initializers in the order they are added (ONNX wants a topological order, which
/// building forward gives).
#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    count: usize,
    scope: Option<String>,
}

impl Graph {
    fn fresh(&mut self, what: &str) -> String {
        self.count += 1;
        match &self.scope {
            Some(scope) => format!("{scope}/{what}_{}", self.count),
            None => format!("{what}_{}", self.count),
        }
    }

    /// `f(self)` with the names of the nodes it adds prefixed `scope/` (a temporal module's
    /// nodes, which per-layer profiles of other engines then group: `scripts/cpu_engines.py`).
    pub fn scoped<R>(&mut self, scope: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let outer = self.scope.replace(scope.to_string());
        let r = f(self);
        self.scope = outer;
        r
    }

    /// A float32 weight.
    pub fn weight(&mut self, dims: &[usize], data: Vec<f32>) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "weight {dims:?} holds {} values", data.len());
        let name = self.fresh("w");
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = dims.iter().map(|&d| d as i64).collect();
        t.data_type = DataType::FLOAT as i32;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(t);
        name
    }

    /// A float32 tensor of the model as a weight (its shape kept).
    pub fn tensor<const D: usize>(&mut self, t: Tensor<D>) -> String {
        let dims = t.dims();
        self.weight(&dims, host(t))
    }

    /// An int64 constant (shapes, axes, slice bounds, pads).
    pub fn ints(&mut self, data: &[i64]) -> String {
        let name = self.fresh("i");
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = vec![data.len() as i64];
        t.data_type = DataType::INT64 as i32;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(t);
        name
    }

    /// One node `op(inputs)` with `attrs`, giving a value of shape `dims`.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, dims: Vec<i64>) -> Value {
        let name = self.fresh(&op.to_lowercase());
        let mut node = NodeProto::new();
        node.op_type = op.to_string();
        node.name = name.clone();
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = vec![name.clone()];
        node.attribute = attrs.into_iter().map(|(n, a)| attribute(n, a)).collect();
        self.nodes.push(node);
        Value { name, dims }
    }

    /// The output of the node that gives `x`, which nothing reads yet, renamed `name` (a graph
    /// output), with `dims` as its declared shape.
    pub fn rename(&mut self, x: &Value, name: &str, dims: Vec<i64>) -> Value {
        let node = self.nodes.iter_mut().rev().find(|n| n.output.first() == Some(&x.name));
        node.expect("renaming a value no node gives").output = vec![name.to_string()];
        Value { name: name.to_string(), dims }
    }

    /// An elementwise operator of one input.
    pub fn unary(&mut self, op: &str, x: &Value) -> Value {
        self.op(op, &[&x.name], vec![], x.dims.clone())
    }

    /// An elementwise operator of two inputs; `b` broadcasts to `a`'s shape.
    pub fn binary(&mut self, op: &str, a: &Value, b: &Value) -> Value {
        self.op(op, &[&a.name, &b.name], vec![], a.dims.clone())
    }

    /// `clamp(x, 0, max)`: `Relu`, or `Clip` for a finite `max` (ReLU6).
    pub fn clamp(&mut self, x: &Value, max: f32) -> Value {
        if max.is_infinite() {
            return self.unary("Relu", x);
        }
        let (lo, hi) = (self.scalar(0.0), self.scalar(max));
        self.op("Clip", &[&x.name, &lo, &hi], vec![], x.dims.clone())
    }

    /// A float32 scalar constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.weight(&[], vec![v])
    }

    pub fn concat(&mut self, xs: &[Value], axis: usize) -> Value {
        let mut dims = xs[0].dims.clone();
        dims[axis] = xs.iter().map(|x| x.dims[axis]).sum();
        let names: Vec<&str> = xs.iter().map(|x| x.name.as_str()).collect();
        self.op("Concat", &names, vec![("axis", Attr::Int(axis as i64))], dims)
    }

    /// `x` viewed as `dims` (one of them may be −1).
    pub fn reshape(&mut self, x: &Value, dims: Vec<i64>) -> Value {
        let shape = self.ints(&dims);
        self.op("Reshape", &[&x.name, &shape], vec![], dims)
    }

    pub fn transpose(&mut self, x: &Value, perm: &[usize]) -> Value {
        let dims = perm.iter().map(|&p| x.dims[p]).collect();
        let perm = perm.iter().map(|&p| p as i64).collect();
        self.op("Transpose", &[&x.name], vec![("perm", Attr::Ints(perm))], dims)
    }

    /// `x[start..end]` along `axis`.
    pub fn slice(&mut self, x: &Value, axis: usize, start: usize, end: usize) -> Value {
        let (s, e, a) = (self.ints(&[start as i64]), self.ints(&[end as i64]), self.ints(&[axis as i64]));
        let mut dims = x.dims.clone();
        dims[axis] = (end - start) as i64;
        self.op("Slice", &[&x.name, &s, &e, &a], vec![], dims)
    }

    /// `x` with `before` and `after` zeros along `axis`.
    pub fn pad(&mut self, x: &Value, axis: usize, before: usize, after: usize) -> Value {
        let rank = x.dims.len();
        let mut pads = vec![0i64; 2 * rank];
        (pads[axis], pads[rank + axis]) = (before as i64, after as i64);
        let pads = self.ints(&pads);
        let mut dims = x.dims.clone();
        dims[axis] += (before + after) as i64;
        self.op("Pad", &[&x.name, &pads], vec![], dims)
    }

    /// Mean over `axes`, kept as size-1 dimensions or dropped.
    pub fn reduce_mean(&mut self, x: &Value, axes: &[usize], keep: bool) -> Value {
        let dims = x.dims.iter().enumerate().filter_map(|(i, &d)| match axes.contains(&i) {
            true if keep => Some(1),
            true => None,
            false => Some(d),
        });
        let dims = dims.collect();
        let attrs =
            vec![("axes", Attr::Ints(axes.iter().map(|&a| a as i64).collect())), ("keepdims", Attr::Int(keep as i64))];
        self.op("ReduceMean", &[&x.name], attrs, dims)
    }

    /// The model: the graph from `input` to `outputs`, with `metadata` as its properties.
    pub fn model(self, input: &Value, outputs: &[&Value], metadata: &[(String, String)]) -> ModelProto {
        let mut graph = GraphProto::new();
        graph.name = "gateshift".into();
        graph.node = self.nodes;
        graph.initializer = self.initializers;
        graph.input = vec![value_info(input)];
        graph.output = outputs.iter().map(|v| value_info(v)).collect();
        let mut model = ModelProto::new();
        model.ir_version = IR_VERSION;
        model.producer_name = "gateshift".into();
        model.producer_version = env!("CARGO_PKG_VERSION").into();
        let mut opset = OperatorSetIdProto::new();
        opset.version = OPSET;
        model.opset_import = vec![opset];
        model.graph = Some(graph).into();
        model.metadata_props = metadata
            .iter()
            .map(|(k, v)| {
                let mut e = StringStringEntryProto::new();
                (e.key, e.value) = (k.clone(), v.clone());
                e
            })
            .collect();
        model
    }
}

/// A tensor's values as float32 on the host.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("float data converts to f32")
}

fn attribute(name: &str, a: Attr) -> AttributeProto {
    let mut p = AttributeProto::new();
    p.name = name.to_string();
    let kind = match a {
        Attr::Int(i) => {
            p.i = i;
            AttributeType::INT
        }
        Attr::Ints(v) => {
            p.ints = v;
            AttributeType::INTS
        }
        Attr::Float(f) => {
            p.f = f;
            AttributeType::FLOAT
        }
    };
    p.type_ = kind.into();
    p
}

fn value_info(v: &Value) -> ValueInfoProto {
    let dim = |d: i64| {
        let mut dim = Dimension::new();
        dim.value = Some(if d < 0 { dimension::Value::DimParam(BATCH.into()) } else { dimension::Value::DimValue(d) });
        dim
    };
    let mut shape = TensorShapeProto::new();
    shape.dim = v.dims.iter().map(|&d| dim(d)).collect();
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = DataType::FLOAT as i32;
    tensor.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut info = ValueInfoProto::new();
    info.name = v.name.clone();
    info.type_ = Some(ty).into();
    info
}

/// The serialised model; refuses one that protobuf cannot hold in one message (2 GiB).
pub fn encode(model: &ModelProto) -> Result<Vec<u8>> {
    use protobuf::Message;
    let size = model.compute_size();
    if size >= (1 << 31) {
        bail!("the model is {size} bytes, over protobuf's 2 GiB limit for one ONNX file");
    }
    Ok(model.write_to_bytes()?)
}
