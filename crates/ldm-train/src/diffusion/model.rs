//! The trained half of a latent diffusion model: the UNet and the
//! conditioner, laid out as the reference `LatentDiffusion` state dict
//! (`model.diffusion_model.*`, `cond_stage_model.*`), so a checkpoint's keys
//! read like a CompVis one.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ldm_models::conditioner::ClassEmbedder;
use ldm_models::UNet;

use crate::diffusion::config::{ConditionKind, ConditioningKey, DiffusionRunConfig};

/// The reference `DiffusionWrapper`: holds the UNet as `diffusion_model`.
#[derive(Module, Debug)]
pub struct DiffusionWrapper<B: Backend> {
    /// The denoiser.
    pub diffusion_model: UNet<B>,
}

/// UNet + conditioner, the parameters the diffusion stage trains.
#[derive(Module, Debug)]
pub struct LatentDiffusion<B: Backend> {
    /// `model.diffusion_model.*`.
    pub model: DiffusionWrapper<B>,
    /// `cond_stage_model.*`: the class embedder of `crossattn` class models.
    pub cond_stage_model: Option<ClassEmbedder<B>>,
    /// Classes the model knows (0 = unconditional). With `adm` the label
    /// table has one more row, the null class.
    pub num_classes: usize,
}

impl<B: Backend> LatentDiffusion<B> {
    /// A fresh model for `cfg`, knowing `num_classes` classes (0 when unconditional).
    pub fn new(cfg: &DiffusionRunConfig, num_classes: usize, device: &B::Device) -> Self {
        let mut unet_cfg = cfg.model.unet.clone();
        let cond_stage_model = match (cfg.conditioning.kind, cfg.model.conditioning_key) {
            (ConditionKind::Class, ConditioningKey::Crossattn) => Some(ClassEmbedder::new(
                num_classes,
                cfg.conditioning.embed_dim.expect("validated"),
                device,
            )),
            (ConditionKind::Class, ConditioningKey::Adm) => {
                unet_cfg.num_classes = Some(num_classes + 1);
                None
            }
            _ => None,
        };
        Self {
            model: DiffusionWrapper {
                diffusion_model: UNet::new(&unet_cfg, device),
            },
            cond_stage_model,
            num_classes: match cfg.conditioning.kind {
                ConditionKind::Class => num_classes,
                ConditionKind::None => 0,
            },
        }
    }

    /// Whether the model takes class labels.
    pub fn is_conditional(&self) -> bool {
        self.num_classes > 0
    }

    /// The label meaning "no class" (classifier-free guidance's unconditional half).
    pub fn null_class(&self) -> usize {
        self.num_classes
    }

    /// The model's prediction for `x_t` at `timesteps`; `labels` (one per
    /// sample, [`LatentDiffusion::null_class`] allowed) when conditional.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        timesteps: &[f64],
        labels: Option<&[usize]>,
    ) -> Tensor<B, 4> {
        let unet = &self.model.diffusion_model;
        let Some(labels) = labels.filter(|_| self.is_conditional()) else {
            return unet.forward(x, timesteps, None, None);
        };
        let ids: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [labels.len()]), &x.device());
        match &self.cond_stage_model {
            Some(embedder) => {
                let ctx = embedder.forward(y);
                unet.forward(x, timesteps, Some(ctx), None)
            }
            None => unet.forward(x, timesteps, None, Some(y)),
        }
    }
}
