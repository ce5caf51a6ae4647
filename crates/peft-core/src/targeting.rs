//! Which modules of a model an adapter attaches to, with HF peft's rules made strict.
//!
//! - A list entry matches a module path exactly, or as a suffix at a `.` boundary.
//! - A single string is a regular expression that must match the whole path.
//! - `all-linear` matches every linear layer except the output head.
//! - `exclude_modules` removes matches, `layers_to_transform` keeps only the given layer indices.
//! - Unlike HF peft, every list entry and every pattern must match at least one module.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{LayerKind, PeftError, Result};

/// Last path segments that `all-linear` treats as the output head and leaves out.
pub const OUTPUT_HEAD_NAMES: [&str; 5] = ["lm_head", "head", "classifier", "score", "output_head"];

/// The `target_modules` (or `exclude_modules`) field of an adapter config.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetModules {
    /// Module names: each matches a path exactly or as a `.`-suffix.
    Names(Vec<String>),
    /// A regular expression that must match the whole module path.
    Regex(String),
    /// Every linear layer except the output head (`"all-linear"`).
    AllLinear,
}

impl TargetModules {
    /// A list of names.
    pub fn names<S: AsRef<str>>(names: &[S]) -> Self {
        Self::Names(names.iter().map(|s| s.as_ref().to_string()).collect())
    }
}

impl TargetModules {
    /// Whether the module at `path`, of `kind`, is one of these (by the rules of
    /// [`Targeting`]'s `target_modules`).
    pub fn matches(&self, path: &str, kind: LayerKind) -> Result<bool> {
        Ok(Matcher::compile(self)?.matches(path, kind))
    }
}

impl Serialize for TargetModules {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Names(names) => names.serialize(serializer),
            Self::Regex(pattern) => pattern.serialize(serializer),
            Self::AllLinear => "all-linear".serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for TargetModules {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            One(String),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::List(names) => Self::Names(names),
            Raw::One(s) if s == "all-linear" => Self::AllLinear,
            Raw::One(s) => Self::Regex(s),
        })
    }
}

/// Where an adapter goes, as in HF peft's `LoraConfig` targeting fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Targeting {
    /// Modules to adapt.
    pub target_modules: TargetModules,
    /// Modules never to adapt, even when targeted.
    #[serde(default)]
    pub exclude_modules: Option<TargetModules>,
    /// Only adapt modules inside these layer indices.
    #[serde(default)]
    pub layers_to_transform: Option<Vec<usize>>,
    /// The path segment(s) that precede the layer index, such as `layers` in `layers.3.attn.q`.
    #[serde(default)]
    pub layers_pattern: Option<Vec<String>>,
}

impl Targeting {
    /// Targets the given module names.
    pub fn names<S: AsRef<str>>(names: &[S]) -> Self {
        Self::new(TargetModules::names(names))
    }

    /// Targets with the given `target_modules` and nothing else set.
    pub fn new(target_modules: TargetModules) -> Self {
        Self {
            target_modules,
            exclude_modules: None,
            layers_to_transform: None,
            layers_pattern: None,
        }
    }

    /// Adds an exclusion list.
    pub fn with_exclude(mut self, exclude: TargetModules) -> Self {
        self.exclude_modules = Some(exclude);
        self
    }

    /// Restricts to the given layer indices, found after one of `pattern` (or the first index).
    pub fn with_layers(mut self, layers: Vec<usize>, pattern: Option<Vec<String>>) -> Self {
        self.layers_to_transform = Some(layers);
        self.layers_pattern = pattern;
        self
    }
}

/// A predicate over a module path and its kind.
type Predicate<'a> = Box<dyn Fn(&str, LayerKind) -> bool + 'a>;

enum Matcher {
    Names(Vec<String>),
    Regex(String, Regex),
    AllLinear,
}

impl Matcher {
    fn compile(target: &TargetModules) -> Result<Self> {
        Ok(match target {
            TargetModules::Names(names) => Self::Names(names.clone()),
            TargetModules::Regex(pattern) => Self::Regex(pattern.clone(), full_match_regex(pattern)?),
            TargetModules::AllLinear => Self::AllLinear,
        })
    }

    fn matches(&self, path: &str, kind: LayerKind) -> bool {
        match self {
            Self::Names(names) => names.iter().any(|name| name_matches(name, path)),
            Self::Regex(_, regex) => regex.is_match(path),
            Self::AllLinear => kind == LayerKind::Linear && !is_output_head(path),
        }
    }

    /// Each entry as written, with the predicate it stands for.
    fn entries(&self) -> Vec<(String, Predicate<'_>)> {
        match self {
            Self::Names(names) => names
                .iter()
                .map(|name| {
                    let pred: Predicate<'_> =
                        Box::new(move |path, _| name_matches(name, path));
                    (name.clone(), pred)
                })
                .collect(),
            Self::Regex(pattern, _) => vec![(pattern.clone(), Box::new(|p, k| self.matches(p, k)))],
            Self::AllLinear => vec![("all-linear".into(), Box::new(|p, k| self.matches(p, k)))],
        }
    }
}

/// Does list entry `name` match `path` exactly or as a `.`-boundary suffix?
pub fn name_matches(name: &str, path: &str) -> bool {
    path == name || (path.len() > name.len() && path.ends_with(name) && path.as_bytes()[path.len() - name.len() - 1] == b'.')
}

fn is_output_head(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    OUTPUT_HEAD_NAMES.contains(&last)
}

fn full_match_regex(pattern: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| PeftError::InvalidPattern {
        pattern: pattern.to_string(),
        reason: e.to_string(),
    })
}

/// The layer index of a module path: the number after one of `patterns`, or the first number.
pub fn layer_index(path: &str, patterns: Option<&[String]>) -> Option<usize> {
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        let Ok(index) = segment.parse::<usize>() else { continue };
        match patterns {
            None => return Some(index),
            Some(patterns) if i > 0 && patterns.iter().any(|p| p == segments[i - 1]) => {
                return Some(index);
            }
            Some(_) => {}
        }
    }
    None
}

/// A compiled [`Targeting`].
pub struct TargetMatcher {
    include: Matcher,
    exclude: Option<Matcher>,
    layers: Option<(Vec<usize>, Option<Vec<String>>)>,
}

impl TargetMatcher {
    /// Compiles the patterns of `targeting`.
    pub fn new(targeting: &Targeting) -> Result<Self> {
        if let TargetModules::Names(names) = &targeting.target_modules
            && names.is_empty()
        {
            return Err(PeftError::InvalidConfig("target_modules is empty".into()));
        }
        Ok(Self {
            include: Matcher::compile(&targeting.target_modules)?,
            exclude: targeting.exclude_modules.as_ref().map(Matcher::compile).transpose()?,
            layers: targeting
                .layers_to_transform
                .clone()
                .map(|layers| (layers, targeting.layers_pattern.clone())),
        })
    }

    /// Whether the module at `path`, of `kind`, is adapted.
    pub fn matches(&self, path: &str, kind: LayerKind) -> bool {
        if !self.include.matches(path, kind) {
            return false;
        }
        if self.exclude.as_ref().is_some_and(|e| e.matches(path, kind)) {
            return false;
        }
        match &self.layers {
            None => true,
            Some((layers, pattern)) => {
                layer_index(path, pattern.as_deref()).is_some_and(|i| layers.contains(&i))
            }
        }
    }

    /// The candidates that match, or an error naming the first target entry that matches none.
    pub fn select(&self, candidates: &[(String, LayerKind)]) -> Result<Vec<String>> {
        for (entry, pred) in self.include.entries() {
            if !candidates.iter().any(|(path, kind)| pred(path, *kind)) {
                return Err(PeftError::NoTargetMatch {
                    closest: closest_paths(&entry, candidates.iter().map(|(p, _)| p.as_str()), 3),
                    target: entry,
                });
            }
        }
        let selected: Vec<String> = candidates
            .iter()
            .filter(|(path, kind)| self.matches(path, *kind))
            .map(|(path, _)| path.clone())
            .collect();
        if selected.is_empty() {
            return Err(PeftError::InvalidConfig(
                "exclude_modules and layers_to_transform leave no module to adapt".into(),
            ));
        }
        Ok(selected)
    }
}

/// Per-path overrides such as HF peft's `rank_pattern` and `alpha_pattern`.
///
/// Each key is a regular expression matched against the end of a module path at a `.` boundary;
/// when several match, the longest key wins.
pub fn pattern_value<T: Copy>(patterns: &BTreeMap<String, T>, path: &str) -> Result<Option<T>> {
    let mut best: Option<(usize, T)> = None;
    for (pattern, value) in patterns {
        let regex = full_match_regex(&format!("(?:.*\\.)?(?:{pattern})"))?;
        if regex.is_match(path) && best.is_none_or(|(len, _)| pattern.len() > len) {
            best = Some((pattern.len(), *value));
        }
    }
    Ok(best.map(|(_, v)| v))
}

/// The `n` paths closest to `target` by edit distance (on the whole path or its last segments).
pub fn closest_paths<'a>(target: &str, paths: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = paths
        .map(|path| {
            let segments: Vec<&str> = path.split('.').collect();
            let best = (0..segments.len())
                .map(|i| edit_distance(target, &segments[i..].join(".")))
                .min()
                .unwrap_or(usize::MAX);
            (best, path)
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(n).map(|(_, p)| p.to_string()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates() -> Vec<(String, LayerKind)> {
        [
            "layers.0.attn.q_proj",
            "layers.0.attn.v_proj",
            "layers.0.mlp.up",
            "layers.1.attn.q_proj",
            "layers.1.attn.v_proj",
            "layers.1.mlp.up",
            "embed",
            "lm_head",
        ]
        .iter()
        .map(|p| {
            let kind = if *p == "embed" { LayerKind::Embedding } else { LayerKind::Linear };
            (p.to_string(), kind)
        })
        .collect()
    }

    #[test]
    fn names_match_exactly_or_at_dot_suffix() {
        assert!(name_matches("q_proj", "layers.0.attn.q_proj"));
        assert!(name_matches("attn.q_proj", "layers.0.attn.q_proj"));
        assert!(!name_matches("proj", "layers.0.attn.q_proj"));
        assert!(name_matches("lm_head", "lm_head"));
        let m = TargetMatcher::new(&Targeting::names(&["q_proj", "v_proj"])).unwrap();
        assert_eq!(m.select(&candidates()).unwrap().len(), 4);
    }

    #[test]
    fn regex_is_a_full_match() {
        let m = TargetMatcher::new(&Targeting::new(TargetModules::Regex(r"layers\.1\..*_proj".into()))).unwrap();
        assert_eq!(m.select(&candidates()).unwrap(), vec!["layers.1.attn.q_proj", "layers.1.attn.v_proj"]);
        let m = TargetMatcher::new(&Targeting::new(TargetModules::Regex("q_proj".into()))).unwrap();
        assert!(matches!(m.select(&candidates()), Err(PeftError::NoTargetMatch { .. })));
    }

    #[test]
    fn all_linear_skips_head_and_embeddings() {
        let m = TargetMatcher::new(&Targeting::new(TargetModules::AllLinear)).unwrap();
        let sel = m.select(&candidates()).unwrap();
        assert_eq!(sel.len(), 6);
        assert!(!sel.iter().any(|p| p == "lm_head" || p == "embed"));
    }

    #[test]
    fn unknown_target_is_an_error_naming_closest_paths() {
        let m = TargetMatcher::new(&Targeting::names(&["q_proj", "q_prj"])).unwrap();
        match m.select(&candidates()) {
            Err(PeftError::NoTargetMatch { target, closest }) => {
                assert_eq!(target, "q_prj");
                assert!(closest[0].ends_with("q_proj"), "{closest:?}");
            }
            other => panic!("expected NoTargetMatch, got {other:?}"),
        }
    }

    #[test]
    fn exclude_and_layers_to_transform() {
        let t = Targeting::names(&["q_proj", "v_proj", "up"])
            .with_exclude(TargetModules::names(&["v_proj"]))
            .with_layers(vec![1], Some(vec!["layers".into()]));
        let m = TargetMatcher::new(&t).unwrap();
        assert_eq!(m.select(&candidates()).unwrap(), vec!["layers.1.attn.q_proj", "layers.1.mlp.up"]);
        assert_eq!(layer_index("model.layers.12.mlp", Some(&["layers".into()])), Some(12));
        assert_eq!(layer_index("blocks.3.x", None), Some(3));
        assert_eq!(layer_index("embed", None), None);
    }

    #[test]
    fn pattern_value_prefers_longest_suffix_match() {
        let mut p = BTreeMap::new();
        p.insert("q_proj".to_string(), 4usize);
        p.insert(r"layers\.1\.attn\.q_proj".to_string(), 16usize);
        assert_eq!(pattern_value(&p, "layers.0.attn.q_proj").unwrap(), Some(4));
        assert_eq!(pattern_value(&p, "layers.1.attn.q_proj").unwrap(), Some(16));
        assert_eq!(pattern_value(&p, "layers.1.attn.v_proj").unwrap(), None);
    }

    #[test]
    fn target_modules_serde_follows_hf() {
        let t: TargetModules = serde_json::from_str(r#""all-linear""#).unwrap();
        assert_eq!(t, TargetModules::AllLinear);
        let t: TargetModules = serde_json::from_str(r#"["q","v"]"#).unwrap();
        assert_eq!(t, TargetModules::names(&["q", "v"]));
        let t: TargetModules = serde_json::from_str(r#"".*q""#).unwrap();
        assert_eq!(t, TargetModules::Regex(".*q".into()));
        assert!(matches!(
            TargetMatcher::new(&Targeting::new(TargetModules::Regex("(".into()))),
            Err(PeftError::InvalidPattern { .. })
        ));
    }
}
