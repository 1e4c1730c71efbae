//! The library's top-level error: one variant per stage, each carrying that stage's typed error.

use crate::io::{LoadError, SaveError};
use crate::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Invalid(#[from] crate::ir::ValidationError),
}
