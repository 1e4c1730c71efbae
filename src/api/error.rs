//! The API's error: every stage's typed error, and the kind of failure each is — the command line's exit status
//! and the Python module's exception class both follow from the kind.

use crate::calibrate::CalibrateError;
use crate::convert::ConvertError;
use crate::io::{LoadError, SaveError};
use crate::ir::{ExtractError, ValidationError};
use crate::passes::PassError;
use crate::runtime::RuntimeError;
use crate::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (options that contradict each other, a value out of range).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Writing something the API was asked to write (test data, a report) failed.
    #[error("{what}: {source}")]
    Write {
        what: String,
        source: std::io::Error,
    },
}

/// What kind of failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong: an unknown pass, options that contradict each other, OUT is the input.
    Usage,
    /// A file could not be read or written.
    File,
    /// The model is not a valid ONNX model, or its graph is invalid.
    Model,
    /// The inputs to run the models on could not be read or made.
    Inputs,
    /// A pass refused the model, or produced something invalid.
    Pass,
    /// The models could not be compared (their outputs differ in names or number).
    Verification,
    /// No runtime could load or run a model.
    Runtime,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The name the Python package's exceptions are keyed by.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::File => "file",
            ErrorKind::Model => "model",
            ErrorKind::Inputs => "inputs",
            ErrorKind::Pass => "pass",
            ErrorKind::Verification => "verification",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Other => "other",
        }
    }
}

/// What the caller can do about an error, for each front end to say in its own words (a flag, an argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// Ask for the output to be written although it replaces the input (or data the input reads).
    Force,
}

impl Error {
    /// What would let the request go through, when the caller can say so.
    pub fn remedy(&self) -> Option<Remedy> {
        let replaces = |e: &SaveError| matches!(e, SaveError::WouldReplaceSource(_));
        match self {
            Error::Convert(ConvertError::SameFile(_)) => Some(Remedy::Force),
            Error::Convert(ConvertError::Save(e)) | Error::Save(e) if replaces(e) => {
                Some(Remedy::Force)
            }
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Load(e) => load_kind(e),
            Error::Save(e) => save_kind(e),
            Error::Convert(e) => convert_kind(e),
            Error::Pass(e) => pass_kind(e),
            Error::Calibrate(e) => calibrate_kind(e),
            Error::Verify(e) => verify_kind(e),
            Error::Runtime(_) => ErrorKind::Runtime,
            Error::Extract(ExtractError::Invalid(_)) => ErrorKind::Model,
            Error::Extract(_) => ErrorKind::Usage,
            Error::Invalid(_) => ErrorKind::Model,
            Error::Write { .. } => ErrorKind::File,
        }
    }
}

fn load_kind(e: &LoadError) -> ErrorKind {
    match e {
        LoadError::Io { .. } => ErrorKind::File,
        _ => ErrorKind::Model,
    }
}

fn convert_kind(e: &ConvertError) -> ErrorKind {
    match e {
        ConvertError::SameFile(_) => ErrorKind::Usage,
        ConvertError::Pass(e) => pass_kind(e),
        ConvertError::Verify(e) => verify_kind(e),
        ConvertError::Save(e) => save_kind(e),
        ConvertError::Calibrate(e) => calibrate_kind(e),
    }
}

fn pass_kind(e: &PassError) -> ErrorKind {
    match e {
        PassError::Unknown(_) | PassError::StopAfterUnknown(_) => ErrorKind::Usage,
        PassError::Dump { .. } => ErrorKind::File,
        PassError::Invalid { .. } | PassError::Patch { .. } | PassError::Refused { .. } => {
            ErrorKind::Pass
        }
    }
}

fn calibrate_kind(e: &CalibrateError) -> ErrorKind {
    match e {
        CalibrateError::Refused(_) | CalibrateError::Fit { .. } => ErrorKind::Pass,
        CalibrateError::Inputs { .. } => ErrorKind::Inputs,
        CalibrateError::Run(e) => verify_kind(e),
        CalibrateError::Extract(_) => ErrorKind::Model,
        CalibrateError::Patch(e) => pass_kind(e),
    }
}

fn verify_kind(e: &VerifyError) -> ErrorKind {
    match e {
        VerifyError::Runtime(_) | VerifyError::NoRuntime(_) => ErrorKind::Runtime,
        VerifyError::TestData { .. } | VerifyError::Inputs(_) => ErrorKind::Inputs,
        VerifyError::OutputMismatch(_) => ErrorKind::Verification,
        VerifyError::Encode(_) => ErrorKind::Model,
        // Segments are cut from the model's own structure: a failure is the model's (or normshift's).
        VerifyError::Segment(_) => ErrorKind::Model,
    }
}

fn save_kind(e: &SaveError) -> ErrorKind {
    match e {
        SaveError::Io { .. } => ErrorKind::File,
        SaveError::Invalid(_) | SaveError::Encode(_) => ErrorKind::Model,
        SaveError::TooLargeInline(_)
        | SaveError::BadLocation(_)
        | SaveError::WouldReplaceSource(_) => ErrorKind::Usage,
    }
}
