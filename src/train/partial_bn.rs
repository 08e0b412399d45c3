//! Partial BN (TSN's, which the official GSM and TSM code train with): every BatchNorm of the
//! backbone but the first frozen — running statistics, no updates; or, for fine-tuning with
//! small batches, every one.

use burn::module::{Flag, Module, ModuleMapper, Param};

use crate::model::Recognizer;

/// Freezes every BatchNorm of the backbone but the first (official partial BN; GSM's BN3d is
/// not a BatchNorm2d there and stays trainable), or with `all` the first too (frozen BN:
/// running statistics, no updates). Returns the frozen parameter paths.
pub fn partial_bn(model: Recognizer, all: bool) -> (Recognizer, Vec<String>) {
    struct Freeze {
        path: Vec<String>,
        seen_first: Option<String>,
        frozen: Vec<String>,
        all: bool,
    }
    impl Freeze {
        /// The BatchNorm whose flag is being mapped: burn enters the flag's own field
        /// (`….bn1.training`), so the BatchNorm is the module above it.
        fn bn_of(&self) -> Option<String> {
            let path = match self.path.split_last() {
                Some((last, above)) if last == "training" => above,
                _ => &self.path[..],
            };
            let p = path.join(".");
            let bn = path.last()?;
            let is_bn = (bn == "bn" || bn.starts_with("bn")) && (self.all || !p.contains("temporal"));
            is_bn.then_some(p)
        }
    }
    impl ModuleMapper for Freeze {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
            let Some(bn) = self.bn_of() else { return flag };
            match &self.seen_first {
                None if !self.all => {
                    self.seen_first = Some(bn);
                    flag
                }
                Some(first) if *first == bn => flag,
                _ => {
                    self.frozen.push(format!("{bn}.weight"));
                    self.frozen.push(format!("{bn}.bias"));
                    flag.map(|f| f.with(false))
                }
            }
        }
    }
    let mut f = Freeze { path: Vec::new(), seen_first: None, frozen: Vec::new(), all };
    let model = model.map(&mut f);
    (model, f.frozen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, ModelConfig, TemporalKind};

    /// Partial BN keeps the first BatchNorm training and freezes the others; frozen BN freezes
    /// every one, the temporal modules' too.
    #[test]
    fn partial_and_frozen_bn_find_the_batch_norms() {
        let device = crate::backend::device("flex").unwrap();
        let cfg = ModelConfig::new(Arch::ResnetMini, TemporalKind::Gsm, 4, 3);
        let (_, partial) = partial_bn(cfg.init(&device), false);
        let (_, all) = partial_bn(cfg.init(&device), true);
        println!("partial {} all {}: {:?}", partial.len(), all.len(), &all[..all.len().min(6)]);
        assert!(partial.len() >= 10, "{partial:?}");
        assert_eq!(all.len(), partial.len() + 2 + 2 * 4, "{all:?}");
        assert!(
            partial.iter().all(|p| !p.contains("temporal"))
                && !partial.contains(&"base_model.ResNet.bn1.weight".into())
        );
        // BN-Inception's units (`….bn`), as the official `--npb`-less recipes freeze them.
        let cfg = ModelConfig::new(Arch::BnInception, TemporalKind::Gsm, 8, 3);
        let (_, partial) = partial_bn(cfg.init(&device), false);
        assert!(partial.len() > 100, "{}", partial.len());
    }
}
