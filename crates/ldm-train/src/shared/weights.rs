//! Module weights ⇄ safetensors bytes, with strict key checking.
//!
//! Keys are the module's parameter paths with an optional prefix, e.g.
//! `encoder.down.0.block.0.conv1.weight` — the reference checkpoint names.
//! Loading refuses partial matches and names every missing, unexpected or
//! misshaped key.

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::{bail, Result};
use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::TensorData;
use burn_store::{ModuleSnapshot, TensorSnapshot};
use ldm_models::tensor_bytes::f32_values;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// One named f32 tensor ready to serialize.
pub struct NamedTensor {
    /// Safetensors key.
    pub key: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian f32 bytes.
    pub bytes: Vec<u8>,
}

/// Collects every parameter and buffer of `module` as f32 tensors named `prefix` + path.
pub fn collect<B: Backend, M: ModuleSnapshot<B>>(
    module: &M,
    prefix: &str,
) -> Result<Vec<NamedTensor>> {
    // Enum variant names stay out of the keys: the UNet's sequential blocks
    // are lists of layer enums whose reference keys are bare positions.
    module
        .collect(None, None, true)
        .into_iter()
        .map(|snap| {
            let key = format!("{prefix}{}", snap.full_path());
            let data = snap
                .to_data()
                .map_err(|e| anyhow::anyhow!("cannot read tensor {key}: {e:?}"))?
                .convert::<f32>();
            let shape = data.shape.to_vec();
            let bytes = data.as_bytes().to_vec();
            Ok(NamedTensor { key, shape, bytes })
        })
        .collect()
}

/// Serializes tensors (and string metadata) to the safetensors format.
pub fn to_safetensors(
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|t| {
            Ok((
                t.key.clone(),
                TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(safetensors::serialize(views, &Some(metadata))?)
}

/// Parses safetensors bytes; the error names `file`.
pub fn parse<'a>(bytes: &'a [u8], file: &str) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("{file}: not a valid safetensors file ({e})"))
}

/// Loads the keys under `prefix` of `st` into `module`. Every module tensor
/// must be present with its shape, and every key under the prefix must be
/// used; otherwise the error lists the offenders.
pub fn load<B: Backend, M: ModuleSnapshot<B> + Module<B>>(
    module: M,
    st: &SafeTensors,
    prefix: &str,
    file: &str,
) -> Result<M> {
    let mut tensors = Vec::new();
    for (key, view) in st.tensors() {
        let Some(path) = key.strip_prefix(prefix) else {
            continue;
        };
        if view.dtype() != Dtype::F32 {
            bail!(
                "{file}: key `{key}` has dtype {:?}, expected F32",
                view.dtype()
            );
        }
        let data = TensorData::new(f32_values(view.data()), view.shape().to_vec());
        tensors.push((path.to_string(), data));
    }
    load_data(module, tensors, prefix, file)
}

/// [`load`] from file `name` of checkpoint `ck` (errors name the file).
pub fn load_checkpoint_file<B: Backend, M: ModuleSnapshot<B> + Module<B>>(
    module: M,
    ck: &crate::shared::checkpoint::LoadedCheckpoint,
    name: &str,
    prefix: &str,
) -> Result<M> {
    let file = format!("{}/{name}", ck.dir.display());
    let st = parse(ck.file(name)?, &file)?;
    load(module, &st, prefix, &file)
}

/// Loads `(path, data)` pairs (paths without `prefix`) into `module` with the
/// same strict checks as [`load`]; errors name keys as `prefix` + path. Used
/// where tensors come from somewhere other than one of our safetensors files
/// (renamed imports, other dtypes).
pub fn load_data<B: Backend, M: ModuleSnapshot<B> + Module<B>>(
    mut module: M,
    tensors: Vec<(String, TensorData)>,
    prefix: &str,
    file: &str,
) -> Result<M> {
    let snapshots = tensors
        .into_iter()
        .map(|(path, data)| {
            let path_stack = path.split('.').map(str::to_string).collect();
            TensorSnapshot::from_data(data, path_stack, Vec::new(), ParamId::new())
        })
        .collect();
    let result = module.apply(snapshots, None, None, true);
    let mut problems = Vec::new();
    for e in &result.errors {
        problems.push(e.to_string());
    }
    for (path, _) in &result.missing {
        problems.push(format!("missing key `{prefix}{path}`"));
    }
    for path in &result.unused {
        problems.push(format!("unexpected key `{prefix}{path}`"));
    }
    if !problems.is_empty() {
        bail!("{file}: does not match the model: {}", list_some(&problems));
    }
    Ok(module)
}

/// The first 8 items joined by "; ", plus "(and N more)": error messages stay
/// one readable line however many keys are wrong.
pub fn list_some<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<Cow<str>> = items
        .iter()
        .take(8)
        .map(|s| Cow::from(s.as_ref()))
        .collect();
    let more = items.len().saturating_sub(8);
    let tail = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    format!("{}{tail}", shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use ldm_models::discriminator::{DiscNorm, DiscriminatorConfig, NLayerDiscriminator};

    fn disc(layers: usize) -> NLayerDiscriminator<Flex> {
        let cfg = DiscriminatorConfig {
            in_channels: 3,
            ndf: 8,
            n_layers: layers,
            norm: DiscNorm::Batch,
        };
        NLayerDiscriminator::new(&cfg, &Default::default())
    }

    #[test]
    fn round_trip_is_exact() {
        let a = disc(2);
        let bytes = to_safetensors(&collect(&a, "d.").unwrap(), HashMap::new()).unwrap();
        let st = parse(&bytes, "x").unwrap();
        let b = load(disc(2), &st, "d.", "x").unwrap();
        let again = to_safetensors(&collect(&b, "d.").unwrap(), HashMap::new()).unwrap();
        assert_eq!(bytes, again);
        assert!(st
            .names()
            .iter()
            .any(|n| n.as_str() == "d.bn.0.running_var"));
    }

    #[test]
    fn mismatch_names_the_keys() {
        let bytes = to_safetensors(&collect(&disc(2), "").unwrap(), HashMap::new()).unwrap();
        let st = parse(&bytes, "w.safetensors").unwrap();
        let msg = load(disc(3), &st, "", "w.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("w.safetensors") && msg.contains("convs.4.weight"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_file_is_one_line_error() {
        let bytes = to_safetensors(&collect(&disc(2), "").unwrap(), HashMap::new()).unwrap();
        let msg = parse(&bytes[..bytes.len() / 2], "m.safetensors")
            .err()
            .unwrap()
            .to_string();
        assert!(
            msg.starts_with("m.safetensors") && !msg.contains('\n'),
            "{msg}"
        );
    }
}
