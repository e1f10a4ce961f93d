//! Picks the burn backend once, from `--device cpu|cuda[:i]`; everything else
//! is generic over it.

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;

/// A device named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    /// The Flex CPU backend.
    Cpu,
    /// CUDA GPU with this index (needs the `cuda` feature).
    Cuda(usize),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{s}` (expected cpu, cuda or cuda:N)")),
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
    match device {
        DeviceArg::Cpu => {
            job.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default())
        }
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda(i) => job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
            burn::backend::cuda::CudaDevice::new(i),
        ),
        #[cfg(not(feature = "cuda"))]
        DeviceArg::Cuda(_) => {
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
        assert_eq!("cuda".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceArg>(), Ok(DeviceArg::Cuda(3)));
        assert!("tpu".parse::<DeviceArg>().is_err());
    }
}
