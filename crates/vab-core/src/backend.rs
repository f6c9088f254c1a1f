//! Which burn backend computes, and on which device: `flex` (pure Rust, always built), `tch`
//! (libtorch on the CPU), `wgpu` (Vulkan, Metal or DX12) or `cuda`, the last three opt-in cargo
//! features. burn 0.22 chooses the backend through the device, so this is the one place that
//! names one.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// A compute backend and, for the GPU ones, the index of its device (CLI `--backend`,
/// `--device`). Written `flex`, `tch`, `wgpu:N` or `cuda:N` in run files and JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Backend {
    /// burn's portable CPU backend.
    #[default]
    Flex,
    /// libtorch on the CPU, through burn-tch (needs the `tch` feature).
    Tch,
    /// The N-th adapter burn's wgpu runtime finds (needs the `wgpu` feature).
    Wgpu(usize),
    /// The N-th CUDA device (needs the `cuda` feature).
    Cuda(usize),
}

impl Backend {
    /// This backend on device `index`; the CPU backends have only device 0.
    pub fn on_device(self, index: usize) -> Result<Backend, String> {
        match self {
            Backend::Wgpu(_) => Ok(Backend::Wgpu(index)),
            Backend::Cuda(_) => Ok(Backend::Cuda(index)),
            cpu if index == 0 => Ok(cpu),
            cpu => Err(format!("--device {index}: the {} backend has only device 0; --device picks a GPU for --backend wgpu or cuda", cpu.name())),
        }
    }

    /// The inference device of this backend; `Err` when the binary was built without it or
    /// the device is not there.
    pub fn device(self) -> Result<Device, String> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "tch")]
            #[allow(deprecated)] // burn-tch is deprecated upstream; it stays an opt-in here
            Backend::Tch => Ok(Device::libtorch()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu(index) => gpu::nth(burn::tensor::DeviceType::Wgpu, "wgpu", index),
            #[cfg(feature = "cuda")]
            Backend::Cuda(index) => gpu::nth(burn::tensor::DeviceType::Cuda, "cuda", index),
            #[allow(unreachable_patterns)] // every backend may be compiled in
            missing => Err(format!("this vab was built without the {0} backend; rebuild with `--features {0}`", missing.name())),
        }
    }

    /// The backend's name, without the device.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Tch => "tch",
            Backend::Wgpu(_) => "wgpu",
            Backend::Cuda(_) => "cuda",
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    use burn::tensor::{Device, DeviceType};

    /// The `index`-th device of `kind`, or an error listing how many there are.
    pub fn nth(kind: DeviceType, name: &str, index: usize) -> Result<Device, String> {
        let devices = Device::enumerate(kind).into_vec();
        let found = devices.len();
        devices.into_iter().nth(index).ok_or_else(|| match found {
            0 => format!("no {name} device found: is a GPU driver installed{}?", if name == "wgpu" { " (Vulkan, Metal or DX12)" } else { "" }),
            n => format!("no {name} device {index}: found {n} (--device 0 to {})", n - 1),
        })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Wgpu(index) | Backend::Cuda(index) => write!(f, "{}:{index}", self.name()),
            cpu => f.write_str(cpu.name()),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, index) = match s.split_once(':') {
            Some((name, index)) => (name, index.parse().map_err(|_| format!("backend `{s}`: the device after `:` must be a number"))?),
            None => (s, 0),
        };
        let backend = match name {
            "flex" => Backend::Flex,
            "tch" => Backend::Tch,
            "wgpu" => Backend::Wgpu(0),
            "cuda" => Backend::Cuda(0),
            _ => return Err(format!("unknown backend `{s}`; use flex, tch, wgpu or cuda")),
        };
        backend.on_device(index)
    }
}

impl TryFrom<String> for Backend {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Backend> for String {
    fn from(backend: Backend) -> String {
        backend.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_old_run_files_still_parse() {
        for backend in [Backend::Flex, Backend::Tch, Backend::Wgpu(0), Backend::Cuda(3)] {
            assert_eq!(backend.to_string().parse::<Backend>().unwrap(), backend);
            let json = serde_json::to_string(&backend).unwrap();
            assert_eq!(serde_json::from_str::<Backend>(&json).unwrap(), backend);
        }
        assert_eq!(serde_json::from_str::<Backend>("\"flex\"").unwrap(), Backend::Flex);
        assert_eq!("wgpu".parse::<Backend>().unwrap(), Backend::Wgpu(0));
        assert_eq!(Backend::Cuda(3).to_string(), "cuda:3");
    }

    #[test]
    fn bad_names_and_devices_are_explained() {
        assert!("metal".parse::<Backend>().unwrap_err().contains("use flex, tch, wgpu or cuda"));
        assert!("wgpu:x".parse::<Backend>().unwrap_err().contains("must be a number"));
        assert!(Backend::Flex.on_device(1).unwrap_err().contains("only device 0"));
        assert_eq!(Backend::Wgpu(0).on_device(2).unwrap(), Backend::Wgpu(2));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_not_built_in_names_its_feature() {
        assert_eq!(Backend::Cuda(0).device().unwrap_err(), "this vab was built without the cuda backend; rebuild with `--features cuda`");
    }
}
