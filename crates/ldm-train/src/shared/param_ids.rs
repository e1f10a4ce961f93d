//! Parameter ids derived from parameter paths.
//!
//! burn keys optimizer state by `ParamId`, and a freshly built module gets new
//! random ids. Giving every parameter an id hashed from its path (plus a
//! namespace per module) makes ids identical across processes, so optimizer
//! state saved by one run applies to the model rebuilt by the next.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use crate::shared::noise::mix;

struct PathIds {
    namespace: u64,
    path: Vec<String>,
}

impl PathIds {
    fn id(&self) -> ParamId {
        let key = self.path.join(".");
        let mut words = vec![self.namespace];
        words.extend(key.bytes().map(u64::from));
        ParamId::from(mix(&words))
    }
}

impl<B: Backend> ModuleMapper<B> for PathIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.id(), tensor, mapper)
    }
    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.id(), tensor, mapper)
    }
    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(self.id(), tensor, mapper)
    }
}

/// Re-ids every parameter of `module` from `namespace` and its path.
pub fn stable_ids<B: Backend, M: Module<B>>(module: M, namespace: &str) -> M {
    let ns = mix(&namespace.bytes().map(u64::from).collect::<Vec<_>>());
    module.map(&mut PathIds {
        namespace: ns,
        path: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::ModuleVisitor;
    use ldm_models::discriminator::{DiscNorm, DiscriminatorConfig, NLayerDiscriminator};

    struct Ids(Vec<u64>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push(p.id.val());
        }
    }

    // ActNorm: BatchNorm's running statistics are visited with throwaway ids
    // (they are not parameters and never reach an optimizer).
    #[test]
    fn ids_repeat_across_builds_and_are_unique() {
        let cfg = DiscriminatorConfig {
            in_channels: 3,
            ndf: 8,
            n_layers: 2,
            norm: DiscNorm::Act,
        };
        let ids = |ns: &str| {
            let d = stable_ids(
                NLayerDiscriminator::<Flex>::new(&cfg, &Default::default()),
                ns,
            );
            let mut v = Ids(vec![]);
            d.visit(&mut v);
            v.0
        };
        let a = ids("d");
        assert_eq!(a, ids("d"));
        assert_ne!(a, ids("g"));
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
    }
}
