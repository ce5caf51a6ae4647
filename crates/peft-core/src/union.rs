//! Several methods as one adapter: [`ConfigUnion`], the config of a composition such as MAM
//! (prefix + parallel adapter) or UniPELT (LoRA + prefix + gated adapter), added under one name.

use std::any::Any;
use std::collections::BTreeSet;

use crate::{MethodConfig, PeftError, Result, Site, Targeting};

/// The configs of several methods, added together under one adapter name by
/// [`PeftModel::add_adapter`](crate::PeftModel::add_adapter): each part goes to the layers its
/// method wraps, all or none. The adapter is then one name for every operation (activate,
/// disable, delete, [`adapter_tensors`](crate::PeftModel::adapter_tensors)).
///
/// Two parts of the same method (two prefixes, say, which would meet on one site) are refused
/// when the union is validated.
#[derive(Debug, Default)]
pub struct ConfigUnion {
    /// The parts, in the order they are added.
    pub parts: Vec<Box<dyn MethodConfig + Send + Sync>>,
}

impl ConfigUnion {
    /// An empty union.
    pub fn new() -> Self {
        Self::default()
    }

    /// The union with `part` added.
    pub fn with(mut self, part: impl MethodConfig + Send + Sync) -> Self {
        self.parts.push(Box::new(part));
        self
    }
}

impl MethodConfig for ConfigUnion {
    fn peft_type(&self) -> &'static str {
        "UNION"
    }

    /// The first part's site (a union acts on each of its parts' sites).
    fn site(&self) -> Site {
        self.parts.first().map_or(Site::Weight, |p| p.site())
    }

    /// The first part's targets (each part keeps its own).
    fn targeting(&self) -> &Targeting {
        static NONE: std::sync::OnceLock<Targeting> = std::sync::OnceLock::new();
        self.parts.first().map_or_else(|| NONE.get_or_init(|| Targeting::names::<&str>(&[])), |p| p.targeting())
    }

    fn validate(&self) -> Result<()> {
        if self.parts.is_empty() {
            return Err(PeftError::InvalidConfig("a union of methods needs at least one part".into()));
        }
        let mut seen = BTreeSet::new();
        for part in &self.parts {
            let any: &dyn Any = part.as_ref();
            if any.is::<ConfigUnion>() {
                return Err(PeftError::InvalidConfig("a union of methods cannot hold another union; list its parts".into()));
            }
            if !seen.insert(any.type_id()) {
                return Err(PeftError::InvalidConfig(format!("a union holds two {} parts; one adapter takes each method once (they would meet on the same layers)", part.peft_type())));
            }
            part.validate()?;
        }
        Ok(())
    }
}

/// `config` as a union, when it is one.
pub(crate) fn as_union(config: &dyn MethodConfig) -> Option<&ConfigUnion> {
    let any: &dyn Any = config;
    any.downcast_ref::<ConfigUnion>()
}
