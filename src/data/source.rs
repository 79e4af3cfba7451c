//! Where requests come from: a MovieLens folder or a simulator preset (`sim:<preset>`).

use std::path::{Path, PathBuf};

use super::{Dataset, RequestConfig, SimConfig, load_or_build, simulator};

/// A data source as the user names it.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    MovieLens(PathBuf),
    Simulator(SimConfig),
}

impl Source {
    /// `sim:<preset>` or a folder path.
    pub fn parse(text: &str) -> crate::Result<Self> {
        match simulator::preset_name(text.trim()) {
            Some(name) => Ok(Self::Simulator(SimConfig::preset(name)?)),
            None => Ok(Self::MovieLens(PathBuf::from(text.trim()))),
        }
    }

    /// Builds (or loads from the cache under `artifacts`) the requests with default settings.
    pub fn load(&self, artifacts: &Path) -> crate::Result<Dataset> {
        match self {
            Self::MovieLens(dir) => {
                Ok(load_or_build(dir, &RequestConfig::new(), artifacts, false)?.0)
            }
            Self::Simulator(config) => simulator::build(config),
        }
    }
}
