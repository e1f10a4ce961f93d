//! Configs embedded in the binary, so `--config f8.toml` works from any directory.

/// `(name, TOML text)` of every shipped config, names relative to `configs/`.
pub const ALL: &[(&str, &str)] = &[
    ("f4.toml", include_str!("../../../../configs/f4.toml")),
    ("f8.toml", include_str!("../../../../configs/f8.toml")),
    ("f16.toml", include_str!("../../../../configs/f16.toml")),
    ("f32.toml", include_str!("../../../../configs/f32.toml")),
    ("vq-f4.toml", include_str!("../../../../configs/vq-f4.toml")),
    (
        "vq-f4-noattn.toml",
        include_str!("../../../../configs/vq-f4-noattn.toml"),
    ),
    ("vq-f8.toml", include_str!("../../../../configs/vq-f8.toml")),
    (
        "vq-f16.toml",
        include_str!("../../../../configs/vq-f16.toml"),
    ),
    (
        "tiny/kl-f4.toml",
        include_str!("../../../../configs/tiny/kl-f4.toml"),
    ),
    (
        "tiny/vq-f4.toml",
        include_str!("../../../../configs/tiny/vq-f4.toml"),
    ),
    ("cin.toml", include_str!("../../../../configs/cin.toml")),
    (
        "uncond.toml",
        include_str!("../../../../configs/uncond.toml"),
    ),
    (
        "txt2img.toml",
        include_str!("../../../../configs/txt2img.toml"),
    ),
    (
        "bench/compass.toml",
        include_str!("../../../../configs/bench/compass.toml"),
    ),
    (
        "tiny/kl-f4-fashion.toml",
        include_str!("../../../../configs/tiny/kl-f4-fashion.toml"),
    ),
    (
        "tiny/kl-f4-tux.toml",
        include_str!("../../../../configs/tiny/kl-f4-tux.toml"),
    ),
    (
        "tiny/cin-fashion.toml",
        include_str!("../../../../configs/tiny/cin-fashion.toml"),
    ),
    (
        "tiny/uncond-fashion.toml",
        include_str!("../../../../configs/tiny/uncond-fashion.toml"),
    ),
    (
        "tiny/txt2img-tux.toml",
        include_str!("../../../../configs/tiny/txt2img-tux.toml"),
    ),
    (
        "tiny/txt2img-tux-minilm.toml",
        include_str!("../../../../configs/tiny/txt2img-tux-minilm.toml"),
    ),
];

/// Finds a shipped config by name, with or without `.toml` or a `configs/` prefix.
pub fn find(name: &str) -> Option<(&'static str, &'static str)> {
    let name = name.strip_prefix("configs/").unwrap_or(name);
    ALL.iter()
        .find(|(n, _)| *n == name || n.strip_suffix(".toml") == Some(name))
        .copied()
}

/// Whether a config is for the diffusion stage (it names a frozen
/// `[autoencoder]`) rather than for a first stage.
pub fn is_diffusion(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("autoencoder"))
}
