//! Picks the burn backend once, from `--device`; everything else is generic
//! over it.
//!
//! Spellings: `flex` (burn's pure-Rust CPU backend, always built),
//! `libtorch` (burn-tch on the CPU libtorch that `scripts/setup.sh`
//! provides; a build with `--features tch`), `cpu` (the fastest CPU backend
//! this build has: libtorch when built in, else flex) and `cuda` / `cuda:N`
//! (a build with `--features cuda`).

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;

/// A device named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// The fastest CPU backend of this build (`cpu`).
    Cpu,
    /// The Flex CPU backend (`flex`).
    Flex,
    /// burn's LibTorch backend on the CPU (`libtorch`; needs the `tch` feature).
    LibTorch,
    /// CUDA GPU with this index (needs the `cuda` feature).
    Cuda(usize),
}

/// The backend a [`DeviceArg`] stands for in this build (`cpu` resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// burn's pure-Rust CPU backend.
    Flex,
    /// burn-tch on the CPU.
    LibTorch,
    /// burn-cuda on GPU `i`.
    Cuda(usize),
}

impl DeviceArg {
    /// The backend this names in this build: `cpu` is libtorch when built
    /// in, else flex.
    pub fn backend(self) -> Backend {
        match self {
            Self::Cpu if cfg!(feature = "tch") => Backend::LibTorch,
            Self::Cpu | Self::Flex => Backend::Flex,
            Self::LibTorch => Backend::LibTorch,
            Self::Cuda(i) => Backend::Cuda(i),
        }
    }

    /// Short name of the backend, for logs and benchmark lines.
    pub fn backend_name(self) -> &'static str {
        match self.backend() {
            Backend::Flex => "flex",
            Backend::LibTorch => "libtorch",
            Backend::Cuda(_) => "cuda",
        }
    }
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "flex" => Ok(Self::Flex),
            "libtorch" | "tch" => Ok(Self::LibTorch),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{s}` (expected cpu, flex, libtorch, cuda or cuda:N)")
                }),
        }
    }
}

/// Work that runs on whichever backend the user picked.
pub trait Job {
    /// Runs on backend `B` (an autodiff backend; inference uses its inner one).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()>;
}

/// Runs `job` on the backend of `device`.
pub fn dispatch(device: DeviceArg, job: impl Job) -> Result<()> {
    match device.backend() {
        Backend::Flex => {
            job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default())
        }
        #[cfg(feature = "tch")]
        Backend::LibTorch => job.run::<burn::backend::Autodiff<burn::backend::LibTorch>>(
            burn::backend::libtorch::LibTorchDevice::Cpu,
        ),
        #[cfg(not(feature = "tch"))]
        Backend::LibTorch => anyhow::bail!(
            "this ldm-train was built without libtorch: run `bash scripts/setup.sh`, then \
             `cargo build --release --features tch`"
        ),
        #[cfg(feature = "cuda")]
        Backend::Cuda(i) => job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
            burn::backend::cuda::CudaDevice::new(i),
        ),
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda(_) => {
            anyhow::bail!("this ldm-train was built without CUDA: rebuild with `cargo build --release --features cuda`")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceArg>(), Ok(DeviceArg::Cpu));
        assert_eq!("flex".parse::<DeviceArg>(), Ok(DeviceArg::Flex));
        assert_eq!("libtorch".parse::<DeviceArg>(), Ok(DeviceArg::LibTorch));
        assert_eq!("tch".parse::<DeviceArg>(), Ok(DeviceArg::LibTorch));
        assert_eq!("cuda".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(3)));
        assert!("tpu".parse::<DeviceArg>().is_err());
    }

    #[test]
    fn cpu_is_the_fastest_cpu_backend_built() {
        let want = if cfg!(feature = "tch") {
            Backend::LibTorch
        } else {
            Backend::Flex
        };
        assert_eq!(DeviceArg::Cpu.backend(), want);
        assert_eq!(DeviceArg::Flex.backend(), Backend::Flex);
        assert_eq!(DeviceArg::Cuda(2).backend(), Backend::Cuda(2));
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn libtorch_without_the_feature_says_how_to_build_it() {
        struct Never;
        impl Job for Never {
            fn run<B: AutodiffBackend>(self, _: B::Device) -> Result<()> {
                unreachable!()
            }
        }
        let err = dispatch(DeviceArg::LibTorch, Never)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--features tch") && err.contains("setup.sh"),
            "{err}"
        );
    }
}
