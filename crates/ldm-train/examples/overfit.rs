use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use ldm_train::ae_trainer::AeTrainer;
use ldm_train::config::load_autoencoder;
fn main() {
    let lr = std::env::args().nth(1).unwrap_or("1e-3".into());
    let (cfg, _) = load_autoencoder(
        "tiny/kl-f4.toml",
        &[
            "loss.perceptual_weight=0".into(),
            format!("train.base_lr={lr}"),
            "data.size=32".into(),
            "model.resolution=32".into(),
        ],
    )
    .unwrap();
    let dev = Default::default();
    let mut t = AeTrainer::<Autodiff<Flex>>::new(cfg, dev).unwrap();
    let x =
        Tensor::<Autodiff<Flex>, 4>::random([4, 3, 32, 32], Distribution::Uniform(-1.0, 1.0), &dev);
    let x = burn::tensor::module::avg_pool2d(x, [4, 4], [1, 1], [0, 0], true, false);
    let x = burn::tensor::module::interpolate(
        x,
        [32, 32],
        burn::tensor::ops::InterpolateOptions::new(burn::tensor::ops::InterpolateMode::Bilinear),
    );
    let x = if std::env::args().nth(2).is_some() {
        let folder = ldm_data::ImageFolder::scan("datasets/photos/train".as_ref()).unwrap();
        let mut l = ldm_data::Loader::new(
            folder,
            ldm_data::LoaderConfig {
                batch_size: 4,
                workers: 1,
                seed: 1,
                shuffle: true,
                drop_last: true,
                repeat: true,
                transform: ldm_data::Transform {
                    size: 32,
                    random_crop: true,
                    hflip: true,
                },
                prefetch: 0,
            },
            Default::default(),
        )
        .unwrap();
        let b = l.next_batch().unwrap().unwrap();
        let mn = b.images.iter().cloned().fold(f32::MAX, f32::min);
        let mx = b.images.iter().cloned().fold(f32::MIN, f32::max);
        let mean_abs = b.images.iter().map(|v| v.abs()).sum::<f32>() / b.images.len() as f32;
        println!("batch range {mn} {mx} mean|x| {mean_abs}");
        Tensor::from_data(
            burn::tensor::TensorData::new(b.images, [4, 3, 32, 32]),
            &dev,
        )
    } else {
        x
    };
    for i in 0..40 {
        let out = t.train_step(x.clone()).unwrap();
        if i % 5 == 0 {
            println!(
                "{i} {:?}",
                out.scalars
                    .iter()
                    .filter(|s| s.0 == "rec_loss" || s.0 == "kl_loss")
                    .collect::<Vec<_>>()
            );
        }
    }
}
