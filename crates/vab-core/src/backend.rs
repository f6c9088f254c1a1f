//! Which burn backend computes: `flex` (pure Rust, always built) or `tch` (libtorch, opt-in
//! cargo feature). burn 0.22 chooses the backend through the device, so this is the one place
//! that names one.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// A compute backend (CLI `--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// burn's portable CPU backend.
    #[default]
    Flex,
    /// libtorch on the CPU, through burn-tch (needs the `tch` feature).
    Tch,
}

impl Backend {
    /// The inference device of this backend; `Err` when the binary was built without it.
    pub fn device(self) -> Result<Device, String> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "tch")]
            #[allow(deprecated)] // burn-tch is deprecated upstream; it stays an opt-in here
            Backend::Tch => Ok(Device::libtorch()),
            #[cfg(not(feature = "tch"))]
            Backend::Tch => Err("this vab was built without the tch backend; rebuild with `--features tch`".into()),
        }
    }

    /// Name as written in configs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Tch => "tch",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flex" => Ok(Backend::Flex),
            "tch" => Ok(Backend::Tch),
            _ => Err(format!("unknown backend `{s}`; use flex or tch")),
        }
    }
}
