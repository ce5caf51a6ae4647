//! HF peft adapter folders (`adapter_config.json` + `adapter_model.safetensors`) on any model
//! that reads HF checkpoints ([`HfCheckpoint`]), in both directions: LoRA (rsLoRA, DoRA, rank
//! and alpha patterns, embeddings, LoRA bias), IA3 and prefix tuning.
//!
//! Which modules carry the adapter is read from the tensors themselves (every tensor must find
//! its layer); ranks and scalings come from the config evaluated on HF's module paths, exactly as
//! peft does, and must agree with the tensors' shapes. HF module paths are turned into ours with
//! the model's [`WeightMap`](peft_core::hf_weights::WeightMap).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use peft_core::checkpoint::{TensorEntry, parse, read_bytes, read_f32, serialize, transpose, write_atomic};
use peft_core::hf::{HfAdapterConfig, IA3_SUFFIXES, KEY_PREFIX, LORA_SUFFIXES, PROMPT_EMBEDDINGS as PROMPT, saved_base_tensor, split_key};
use peft_core::hf_weights::HfCheckpoint;
use peft_core::{AdapterTensors, LayerKind, MethodConfig, PeftError, PeftModel, Result, TargetModules, Targeting};
use peft_lora::{Ia3Config, LoraConfig};
use peft_ptuning::PrefixConfig;
use safetensors::SafeTensors;

/// The method of an adapter, with our config for it.
#[derive(Debug)]
pub enum HfMethod {
    /// LoRA, rsLoRA, DoRA.
    Lora(LoraConfig),
    /// IA3.
    Ia3(Ia3Config),
    /// Prefix tuning.
    Prefix(PrefixConfig),
}

/// What [`load_adapter`] attached.
#[derive(Debug)]
pub struct LoadedAdapter {
    /// The file's config.
    pub hf: HfAdapterConfig,
    /// Our config for the same adapter (targets are our module paths), usable with
    /// [`save_adapter`].
    pub method: HfMethod,
    /// Our module paths that carry it.
    pub modules: Vec<String>,
    /// Base tensors the folder also held (peft's `modules_to_save`, saved embedding layers),
    /// loaded into the base model.
    pub base_tensors: Vec<String>,
}

struct Tensor2 {
    key: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn read_tensor(file: &SafeTensors<'_>, key: &str) -> Result<Tensor2> {
    let (shape, values) = read_f32(file, key)?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(PeftError::NonFiniteTensor(key.into()));
    }
    Ok(Tensor2 { key: key.into(), shape, values })
}

/// An HF `[rows, cols]` matrix in Burn's layout `[cols, rows]`.
fn transposed(t: &Tensor2) -> Result<TensorData> {
    match t.shape.as_slice() {
        &[rows, cols] => Ok(TensorData::new(transpose(&t.values, rows, cols), [cols, rows])),
        other => Err(PeftError::ShapeMismatch { name: t.key.clone(), expected: vec![0, 0], actual: other.to_vec() }),
    }
}

fn vector(t: &Tensor2) -> TensorData {
    TensorData::new(t.values.clone(), [t.values.len()])
}

/// `path` as a regular expression matching itself (for per-module rank and alpha patterns).
fn escape(path: &str) -> String {
    path.chars().flat_map(|c| if "\\.+*?()|[]{}^$#&-~".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

/// Loads the adapter in `dir` into `model` under `name`. On error the model is unchanged.
pub fn load_adapter<B: Backend, M: HfCheckpoint<B>>(model: &mut M, dir: &Path, name: &str) -> Result<LoadedAdapter> {
    let hf = HfAdapterConfig::read(dir)?;
    let path = dir.join("adapter_model.safetensors");
    let bytes = read_bytes(&path)?;
    let file = parse(&bytes, &path.display().to_string())?;
    let suffixes: &[&str] = match hf.peft_type.as_str() {
        "LORA" => &LORA_SUFFIXES,
        "IA3" => &IA3_SUFFIXES,
        "PREFIX_TUNING" => &[],
        other => return Err(PeftError::Unsupported(format!("peft_type `{other}` is not supported (LORA, IA3, PREFIX_TUNING)"))),
    };
    let map = model.weight_map();
    let mut by_module: BTreeMap<String, BTreeMap<&str, Tensor2>> = BTreeMap::new();
    let mut base: Vec<(String, String)> = Vec::new();
    let mut prompt = None;
    let mut names: Vec<&str> = file.names();
    names.sort();
    for key in names {
        if key == PROMPT && hf.peft_type == "PREFIX_TUNING" {
            prompt = Some(read_tensor(&file, key)?);
        } else if let Some((module, suffix)) = split_key(key, suffixes) {
            by_module.entry(module.to_string()).or_default().insert(suffix, read_tensor(&file, key)?);
        } else if let Some(base_name) = saved_base_tensor(key, &hf.modules_to_save) {
            base.push((key.to_string(), base_name));
        } else {
            return Err(PeftError::Unsupported(format!("tensor `{key}` is not part of a {} adapter", hf.peft_type)));
        }
    }
    let mut work = model.clone();
    let (method, modules) = match hf.peft_type.as_str() {
        "LORA" => lora_into(&mut work, name, &hf, by_module, &map)?,
        "IA3" => ia3_into(&mut work, name, &hf, by_module, &map)?,
        _ => prefix_into(&mut work, name, &hf, prompt)?,
    };
    let base_tensors = base.iter().map(|(k, _)| k.clone()).collect();
    if !base.is_empty() {
        let entries = base
            .iter()
            .map(|(key, name)| file.tensor(key).map(|v| TensorEntry::from_view(name, &v)).map_err(|e| PeftError::Safetensors { path: key.clone(), reason: e.to_string() }))
            .collect::<Result<Vec<_>>>()?;
        let bytes = serialize(&entries, None, &path.display().to_string())?;
        let renamed = parse(&bytes, &path.display().to_string())?;
        let (loaded, report) = work.assign_hf_weights(&renamed, true)?;
        if let Some(unused) = report.unused.first() {
            return Err(PeftError::Unsupported(format!("base tensor `{unused}` of the adapter has no place in the model")));
        }
        work = loaded;
    }
    *model = work;
    Ok(LoadedAdapter { hf, method, modules, base_tensors })
}

/// The modules `tensors` covers; none is a missing tensor (`what` says which).
fn modules_of(tensors: &AdapterTensors, what: &str) -> Result<Vec<String>> {
    let modules: Vec<String> = tensors.keys().cloned().collect();
    if modules.is_empty() {
        return Err(PeftError::MissingTensor(format!("{KEY_PREFIX}<module>.{what}")));
    }
    Ok(modules)
}

/// Attaches adapter `name` built from `config`, then gives it the file's values.
fn attach<B: Backend, M: PeftModel<B>, C: MethodConfig>(model: &mut M, name: &str, config: &C, tensors: AdapterTensors) -> Result<()> {
    model.add_adapter(name, config)?;
    model.set_adapter_tensors(name, tensors)
}

fn need<'a>(tensors: &'a BTreeMap<&str, Tensor2>, module: &str, suffix: &str) -> Result<&'a Tensor2> {
    tensors.get(suffix).ok_or_else(|| PeftError::MissingTensor(format!("{KEY_PREFIX}{module}.{suffix}")))
}

fn lora_into<B: Backend, M: HfCheckpoint<B>>(
    model: &mut M,
    name: &str,
    hf: &HfAdapterConfig,
    by_module: BTreeMap<String, BTreeMap<&str, Tensor2>>,
    map: &peft_core::hf_weights::WeightMap,
) -> Result<(HfMethod, Vec<String>)> {
    let mut tensors = AdapterTensors::new();
    let (mut ranks, mut alphas) = (BTreeMap::new(), BTreeMap::new());
    let mut bias = false;
    for (module, parts) in &by_module {
        let embedding = parts.contains_key("lora_embedding_A") || parts.contains_key("lora_embedding_B");
        let (a, b) = if embedding {
            (need(parts, module, "lora_embedding_A")?, need(parts, module, "lora_embedding_B")?)
        } else {
            (need(parts, module, "lora_A.weight")?, need(parts, module, "lora_B.weight")?)
        };
        let (r, scaling) = hf.lora_scaling(module)?;
        if a.shape.len() != 2 || a.shape[0] != r {
            return Err(PeftError::ShapeMismatch { name: a.key.clone(), expected: vec![r, a.shape.get(1).copied().unwrap_or(0)], actual: a.shape.clone() });
        }
        if b.shape.len() != 2 || b.shape[1] != r {
            return Err(PeftError::ShapeMismatch { name: b.key.clone(), expected: vec![b.shape.first().copied().unwrap_or(0), r], actual: b.shape.clone() });
        }
        let ours = map.to_ours(module);
        let mut values = BTreeMap::from([("a".to_string(), transposed(a)?), ("b".to_string(), transposed(b)?)]);
        if let Some(t) = parts.get("lora_B.bias") {
            values.insert("bias".into(), vector(t));
            bias = true;
        }
        if let Some(t) = parts.get("lora_magnitude_vector") {
            values.insert("magnitude".into(), vector(t));
        } else if hf.use_dora && !embedding {
            return Err(PeftError::MissingTensor(format!("{KEY_PREFIX}{module}.lora_magnitude_vector")));
        }
        ranks.insert(escape(&ours), r);
        alphas.insert(escape(&ours), scaling * r as f64);
        tensors.insert(ours, values);
    }
    let modules = modules_of(&tensors, "lora_A.weight (the adapter has no LoRA tensors)")?;
    let config = LoraConfig::new(Targeting::names(&modules))
        .with_r(hf.r.max(1))
        .with_alpha(hf.lora_alpha)
        .with_use_dora(hf.use_dora)
        .with_bias(bias)
        .with_rank_pattern(ranks)
        .with_alpha_pattern(alphas);
    attach(model, name, &config, tensors)?;
    Ok((HfMethod::Lora(config), modules))
}

fn ia3_into<B: Backend, M: HfCheckpoint<B>>(
    model: &mut M,
    name: &str,
    hf: &HfAdapterConfig,
    by_module: BTreeMap<String, BTreeMap<&str, Tensor2>>,
    map: &peft_core::hf_weights::WeightMap,
) -> Result<(HfMethod, Vec<String>)> {
    let mut tensors = AdapterTensors::new();
    let mut feedforward = Vec::new();
    for (module, parts) in &by_module {
        let l = need(parts, module, "ia3_l")?;
        let ff = hf.is_feedforward(module)?;
        // peft: `[1, in]` on feed-forward layers (input scaled), `[out, 1]` otherwise.
        let ok = l.shape.len() == 2 && if ff { l.shape[0] == 1 } else { l.shape[1] == 1 };
        if !ok {
            let n = l.values.len();
            return Err(PeftError::ShapeMismatch { name: l.key.clone(), expected: if ff { vec![1, n] } else { vec![n, 1] }, actual: l.shape.clone() });
        }
        let ours = map.to_ours(module);
        if ff {
            feedforward.push(ours.clone());
        }
        tensors.insert(ours, BTreeMap::from([("scale".to_string(), vector(l))]));
    }
    let modules = modules_of(&tensors, "ia3_l (the adapter has no IA3 tensors)")?;
    let config = Ia3Config::new(Targeting::names(&modules)).with_feedforward_modules(TargetModules::names(&feedforward));
    attach(model, name, &config, tensors)?;
    Ok((HfMethod::Ia3(config), modules))
}

fn extra_usize(hf: &HfAdapterConfig, key: &str) -> Result<usize> {
    hf.extra
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| PeftError::InvalidConfig(format!("prefix tuning config needs `{key}`")))
}

fn kv_sites<B: Backend, M: PeftModel<B>>(model: &mut M) -> Vec<String> {
    model.tuned_layers().into_iter().filter(|l| l.kind == LayerKind::KeyValue).map(|l| l.path).collect()
}

fn prefix_into<B: Backend, M: HfCheckpoint<B>>(model: &mut M, name: &str, hf: &HfAdapterConfig, prompt: Option<Tensor2>) -> Result<(HfMethod, Vec<String>)> {
    let prompt = prompt.ok_or_else(|| PeftError::MissingTensor(PROMPT.into()))?;
    if hf.extra.get("prefix_projection").and_then(serde_json::Value::as_bool) == Some(true) && prompt.shape.len() != 2 {
        return Err(PeftError::Unsupported("prefix tuning with a projection must be saved in its projected form".into()));
    }
    let (layers, token_dim, heads) = (extra_usize(hf, "num_layers")?, extra_usize(hf, "token_dim")?, extra_usize(hf, "num_attention_heads")?);
    let sites = kv_sites(model);
    if sites.len() != layers {
        return Err(PeftError::InvalidConfig(format!("the adapter has prefixes for {layers} layers, the model has {} attention layers", sites.len())));
    }
    let nvt = hf.num_virtual_tokens.unwrap_or(prompt.shape[0]);
    let width = layers * 2 * token_dim;
    if prompt.shape != [nvt, width] || heads == 0 || token_dim % heads != 0 {
        return Err(PeftError::ShapeMismatch { name: PROMPT.into(), expected: vec![nvt, width], actual: prompt.shape.clone() });
    }
    let head_dim = token_dim / heads;
    // peft: view [nvt, layers·2, heads, head_dim], permute to [layers·2, heads, nvt, head_dim];
    // entry 2l holds layer l's keys, 2l + 1 its values.
    let part = |index: usize| {
        let mut out = Vec::with_capacity(nvt * token_dim);
        for h in 0..heads {
            for t in 0..nvt {
                let start = t * width + index * token_dim + h * head_dim;
                out.extend_from_slice(&prompt.values[start..start + head_dim]);
            }
        }
        TensorData::new(out, [heads, nvt, head_dim])
    };
    let mut tensors = AdapterTensors::new();
    for (l, site) in sites.iter().enumerate() {
        tensors.insert(site.clone(), BTreeMap::from([("keys".to_string(), part(2 * l)), ("values".to_string(), part(2 * l + 1))]));
    }
    let config = PrefixConfig::new(Targeting::names(&sites)).with_num_virtual_tokens(nvt);
    attach(model, name, &config, tensors)?;
    Ok((HfMethod::Prefix(config), sites))
}

fn data_f32(data: &TensorData) -> Vec<f32> {
    data.clone().convert::<f32>().into_vec::<f32>().expect("f32 data")
}

fn matrix_entry(name: String, data: &TensorData) -> TensorEntry {
    let shape = data.shape.to_vec();
    let values = data_f32(data);
    TensorEntry::f32(name, vec![shape[1], shape[0]], &transpose(&values, shape[0], shape[1]))
}

/// Options of [`save_adapter`].
#[derive(Clone, Debug, Default)]
pub struct SaveOptions<'a> {
    /// peft's `task_type` (`CAUSAL_LM`, `FEATURE_EXTRACTION`, ...).
    pub task_type: Option<&'a str>,
    /// Modules (our paths) trained in full, saved whole as peft's `modules_to_save`.
    pub modules_to_save: &'a [&'a str],
}

/// Saves adapter `name` of `model` as an HF peft folder (`adapter_config.json`,
/// `adapter_model.safetensors`) in `dir`, which peft's `PeftModel.from_pretrained` loads.
/// `method` is the config the adapter was built with. Files appear whole or not at all.
pub fn save_adapter<B: Backend, M: HfCheckpoint<B>>(model: &mut M, name: &str, method: &HfMethod, dir: &Path, options: &SaveOptions<'_>) -> Result<()> {
    let task_type = options.task_type;
    let map = model.weight_map();
    let tensors = model.adapter_tensors(name)?;
    if tensors.is_empty() {
        return Err(PeftError::UnknownAdapter { name: name.into(), known: model.adapter_names() });
    }
    let kinds: BTreeMap<String, LayerKind> = model.tuned_layers().into_iter().map(|l| (l.path, l.kind)).collect();
    let mut entries = Vec::new();
    let mut config = serde_json::json!({
        "task_type": task_type,
        "inference_mode": true,
        "base_model_name_or_path": null,
        "revision": null,
        "auto_mapping": null,
    });
    let obj = config.as_object_mut().expect("object");
    let key = |module: &str, suffix: &str| format!("{KEY_PREFIX}{}.{suffix}", map.to_hf(module));
    match method {
        HfMethod::Lora(c) => {
            let (mut ranks, mut alphas, mut targets) = (BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
            for (module, values) in &tensors {
                let embedding = kinds.get(module) == Some(&LayerKind::Embedding);
                let get = |p: &str| values.get(p).ok_or_else(|| PeftError::MissingTensor(format!("{module}.{p}")));
                let (sa, sb) = if embedding { ("lora_embedding_A", "lora_embedding_B") } else { ("lora_A.weight", "lora_B.weight") };
                entries.push(matrix_entry(key(module, sa), get("a")?));
                entries.push(matrix_entry(key(module, sb), get("b")?));
                if let Some(bias) = values.get("bias") {
                    entries.push(TensorEntry::f32(key(module, "lora_B.bias"), bias.shape.to_vec(), &data_f32(bias)));
                }
                if let Some(m) = values.get("magnitude") {
                    entries.push(TensorEntry::f32(key(module, "lora_magnitude_vector"), m.shape.to_vec(), &data_f32(m)));
                }
                let (r, scaling) = c.rank_and_scaling(module)?;
                let alpha = if c.use_rslora { scaling * (r as f64).sqrt() } else { scaling * r as f64 };
                let hf_module = map.to_hf(module);
                if r != c.r {
                    ranks.insert(hf_module.clone(), r);
                }
                if (alpha - c.alpha).abs() > 1e-12 * c.alpha.abs().max(1.0) {
                    alphas.insert(hf_module.clone(), alpha);
                }
                targets.insert(hf_module);
            }
            obj.extend([
                ("peft_type".into(), "LORA".into()),
                ("r".into(), c.r.into()),
                ("lora_alpha".into(), c.alpha.into()),
                ("lora_dropout".into(), c.dropout.into()),
                ("use_rslora".into(), c.use_rslora.into()),
                ("use_dora".into(), c.use_dora.into()),
                ("lora_bias".into(), c.bias.into()),
                ("bias".into(), "none".into()),
                ("fan_in_fan_out".into(), map.linear_in_out().into()),
                ("target_modules".into(), serde_json::json!(targets)),
                ("rank_pattern".into(), serde_json::json!(ranks)),
                ("alpha_pattern".into(), serde_json::json!(alphas)),
                ("init_lora_weights".into(), true.into()),
                ("modules_to_save".into(), serde_json::Value::Null),
            ]);
        }
        HfMethod::Ia3(c) => {
            let (mut targets, mut ff_modules) = (BTreeSet::new(), BTreeSet::new());
            for (module, values) in &tensors {
                let l = values.get("scale").ok_or_else(|| PeftError::MissingTensor(format!("{module}.scale")))?;
                let ff = c.feedforward_modules.matches(module, LayerKind::Linear)?;
                let n = l.shape[0];
                entries.push(TensorEntry::f32(key(module, "ia3_l"), if ff { vec![1, n] } else { vec![n, 1] }, &data_f32(l)));
                targets.insert(map.to_hf(module));
                if ff {
                    ff_modules.insert(map.to_hf(module));
                }
            }
            obj.extend([
                ("peft_type".into(), "IA3".into()),
                ("target_modules".into(), serde_json::json!(targets)),
                ("feedforward_modules".into(), serde_json::json!(ff_modules)),
                ("fan_in_fan_out".into(), map.linear_in_out().into()),
                ("init_ia3_weights".into(), true.into()),
                ("modules_to_save".into(), serde_json::Value::Null),
            ]);
        }
        HfMethod::Prefix(_) => {
            let sites: Vec<String> = kv_sites(model).into_iter().filter(|s| tensors.contains_key(s)).collect();
            let layers = sites.len();
            let first = &tensors[&sites[0]]["keys"];
            let [heads, nvt, head_dim]: [usize; 3] = first.shape.to_vec().try_into().map_err(|_| PeftError::MissingTensor("keys".into()))?;
            let token_dim = heads * head_dim;
            let width = layers * 2 * token_dim;
            let mut prompt = vec![0.0f32; nvt * width];
            for (l, site) in sites.iter().enumerate() {
                for (j, part) in ["keys", "values"].iter().enumerate() {
                    let data = tensors[site].get(*part).ok_or_else(|| PeftError::MissingTensor(format!("{site}.{part}")))?;
                    if data.shape.to_vec() != [heads, nvt, head_dim] {
                        return Err(PeftError::ShapeMismatch { name: format!("{site}.{part}"), expected: vec![heads, nvt, head_dim], actual: data.shape.to_vec() });
                    }
                    let values = data_f32(data);
                    for h in 0..heads {
                        for t in 0..nvt {
                            let src = (h * nvt + t) * head_dim;
                            let dst = t * width + (2 * l + j) * token_dim + h * head_dim;
                            prompt[dst..dst + head_dim].copy_from_slice(&values[src..src + head_dim]);
                        }
                    }
                }
            }
            entries.push(TensorEntry::f32(PROMPT, vec![nvt, width], &prompt));
            obj.extend([
                ("peft_type".into(), "PREFIX_TUNING".into()),
                ("num_virtual_tokens".into(), nvt.into()),
                ("num_layers".into(), layers.into()),
                ("token_dim".into(), token_dim.into()),
                ("num_attention_heads".into(), heads.into()),
                ("encoder_hidden_size".into(), token_dim.into()),
                ("prefix_projection".into(), false.into()),
                ("num_transformer_submodules".into(), 1.into()),
            ]);
        }
    }
    if !options.modules_to_save.is_empty() {
        let mut saved = Vec::new();
        for module in options.modules_to_save {
            let hf = map.to_hf(module);
            let prefix = format!("{hf}.");
            let tensors = model.hf_tensors(&|name| name.starts_with(&prefix));
            if tensors.is_empty() {
                return Err(PeftError::MissingTensor(format!("{hf}.* (modules_to_save `{module}` has no parameters)")));
            }
            entries.extend(tensors.into_iter().map(|e| TensorEntry { name: format!("{KEY_PREFIX}{}", e.name), ..e }));
            saved.push(hf);
        }
        config["modules_to_save"] = serde_json::json!(saved);
    }
    std::fs::create_dir_all(dir).map_err(|source| PeftError::Io { path: dir.display().to_string(), source })?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    write_atomic(&dir.join("adapter_model.safetensors"), &entries, Some(meta))?;
    let text = serde_json::to_string_pretty(&config).expect("json");
    let path = dir.join("adapter_config.json");
    let tmp = dir.join(format!(".adapter_config.json.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text + "\n").and_then(|()| std::fs::rename(&tmp, &path)).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        PeftError::Io { path: path.display().to_string(), source }
    })
}
