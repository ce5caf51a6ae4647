//! A bidirectional LSTM on the host, for P-Tuning's LSTM encoder, which peft saves by its output:
//! the layers of [`peft_ptuning::PromptLstm`] (Burn's `BiLstm`, each gate an input and a hidden
//! `Linear` in Burn's layout `[d_in, d_out]`) run over one sequence in `f64`.

use std::collections::BTreeMap;

use burn::tensor::TensorData;
use peft_core::{PeftError, Result};

use crate::folder::values_f32;

/// The gates in the order of their pre-activations: input, forget, cell, output.
const GATES: [&str; 4] = ["input_gate", "forget_gate", "cell_gate", "output_gate"];

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One gate's weights: `x·wx + bx + h·wh + bh`.
struct Gate {
    wx: Vec<f32>,
    bx: Vec<f32>,
    wh: Vec<f32>,
    bh: Vec<f32>,
}

impl Gate {
    fn read(params: &BTreeMap<String, TensorData>, prefix: &str, d_in: usize, h: usize) -> Result<Self> {
        let get = |name: &str, shape: &[usize]| {
            let key = format!("{prefix}.{name}");
            let data = params.get(&key).ok_or_else(|| PeftError::MissingTensor(key.clone()))?;
            if data.shape.to_vec() != shape {
                return Err(PeftError::ShapeMismatch { name: key, expected: shape.to_vec(), actual: data.shape.to_vec() });
            }
            Ok(values_f32(data))
        };
        Ok(Self { wx: get("input_transform.weight", &[d_in, h])?, bx: get("input_transform.bias", &[h])?, wh: get("hidden_transform.weight", &[h, h])?, bh: get("hidden_transform.bias", &[h])? })
    }

    fn pre_activation(&self, x: &[f64], state: &[f64], j: usize, h: usize) -> f64 {
        let from_x: f64 = x.iter().enumerate().map(|(k, v)| v * f64::from(self.wx[k * h + j])).sum();
        let from_h: f64 = state.iter().enumerate().map(|(k, v)| v * f64::from(self.wh[k * h + j])).sum();
        from_x + f64::from(self.bx[j]) + from_h + f64::from(self.bh[j])
    }
}

/// One direction over `x [n, d_in]`: the hidden state at each position `[n, h]`.
fn direction(gates: &[Gate; 4], x: &[f64], n: usize, d_in: usize, h: usize, reverse: bool) -> Vec<f64> {
    let (mut hidden, mut cell) = (vec![0.0; h], vec![0.0; h]);
    let mut out = vec![0.0; n * h];
    let order: Vec<usize> = if reverse { (0..n).rev().collect() } else { (0..n).collect() };
    for t in order {
        let xt = &x[t * d_in..(t + 1) * d_in];
        let a: Vec<[f64; 4]> = (0..h).map(|j| std::array::from_fn(|g| gates[g].pre_activation(xt, &hidden, j, h))).collect();
        for j in 0..h {
            let [i, f, g, o] = a[j];
            cell[j] = sigmoid(f) * cell[j] + sigmoid(i) * g.tanh();
            hidden[j] = sigmoid(o) * cell[j].tanh();
        }
        out[t * h..(t + 1) * h].copy_from_slice(&hidden);
    }
    out
}

/// The layers `{prefix}.{i}` (`forward` and `reverse` LSTMs of width `h` each) over
/// `x [n, d_in]`: `[n, 2h]`, as f32, `h` and the number of layers.
pub(crate) fn bidirectional(params: &BTreeMap<String, TensorData>, prefix: &str, x: &[f32], n: usize) -> Result<(Vec<f32>, usize, usize)> {
    let mut layer_in: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    let mut d_in = x.len() / n.max(1);
    let mut h = 0;
    let layers = (0..).take_while(|i| params.contains_key(&format!("{prefix}.{i}.forward.input_gate.input_transform.weight"))).count();
    if layers == 0 {
        return Err(PeftError::MissingTensor(format!("{prefix}.0.forward.input_gate.input_transform.weight")));
    }
    for i in 0..layers {
        let first = &params[&format!("{prefix}.{i}.forward.input_gate.input_transform.weight")];
        h = first.shape.get(1).copied().unwrap_or(0);
        let read = |dir: &str| -> Result<[Gate; 4]> {
            let gate = |g: &str| Gate::read(params, &format!("{prefix}.{i}.{dir}.{g}"), d_in, h);
            Ok([gate(GATES[0])?, gate(GATES[1])?, gate(GATES[2])?, gate(GATES[3])?])
        };
        let (forward, reverse) = (direction(&read("forward")?, &layer_in, n, d_in, h, false), direction(&read("reverse")?, &layer_in, n, d_in, h, true));
        layer_in = (0..n).flat_map(|t| forward[t * h..(t + 1) * h].iter().chain(&reverse[t * h..(t + 1) * h]).copied().collect::<Vec<_>>()).collect();
        d_in = 2 * h;
    }
    Ok((layer_in.iter().map(|v| *v as f32).collect(), h, layers))
}
