//! Weights in and out of the reference formats: the rename tables (the
//! autoencoder's, and the UNet's against diffusers' `UNet2DConditionModel`),
//! import of diffusers folders and CompVis/SD files (with the architecture
//! read from their config or tensor shapes), and export.

pub mod export;
pub mod import;
pub mod import_config;
pub mod key_map;
pub mod pipeline_config;
pub mod pipeline_export;
pub mod pipeline_import;
pub mod unet_key_map;
