//! The files a save has begun but not finished, so that an interrupt can take them away.
//!
//! A save writes temporary files beside its targets and renames them into place at the end. If the process is
//! stopped in between (Ctrl-C), those temporaries would stay behind, and if it is stopped between renaming the
//! data file and the model file, a new data file would sit beside an old model. So every temporary is listed
//! here while it exists, the renames of one save happen under the same lock ([`rename_together`]), and
//! [`abandon`] — called by the binary's interrupt handler — takes the lock, removes what is listed and refuses
//! any later save. An interrupt therefore leaves either the complete output or none of it; when it comes after a
//! save finished (while the program reports or frees memory), the handler names what is complete.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Registry {
    temporaries: Vec<PathBuf>,
    /// The targets that saves have renamed into place: complete files.
    written: Vec<PathBuf>,
    abandoned: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    temporaries: Vec::new(),
    written: Vec::new(),
    abandoned: false,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves the list as it was: still right to use.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lists `tmp` before it is created. Fails once [`abandon`] has run.
pub(super) fn begin(tmp: &Path) -> std::io::Result<()> {
    let mut r = registry();
    if r.abandoned {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted",
        ));
    }
    r.temporaries.push(tmp.to_path_buf());
    Ok(())
}

/// Takes `tmp` off the list (it was renamed or removed).
pub(super) fn end(tmp: &Path) {
    registry().temporaries.retain(|p| p != tmp);
}

/// Renames each `(temporary, target)` pair in order, with no interrupt able to come between them, and takes the
/// renamed temporaries off the list. Stops at the first failure, returning its target.
pub(super) fn rename_together(pairs: &[(&Path, &Path)]) -> Result<(), (PathBuf, std::io::Error)> {
    let mut r = registry();
    for (tmp, target) in pairs {
        std::fs::rename(tmp, target).map_err(|e| (target.to_path_buf(), e))?;
        r.temporaries.retain(|p| p != tmp);
        r.written.push(target.to_path_buf());
    }
    Ok(())
}

/// Removes every unfinished temporary file and refuses further saves. For the interrupt handler, which should
/// exit while holding the guard: until then no save can start, finish or report an error of its own, so the
/// process ends with the handler's status and nothing half-written.
pub fn abandon() -> Abandoned {
    let mut r = registry();
    r.abandoned = true;
    for p in r.temporaries.drain(..) {
        let _ = std::fs::remove_file(p);
    }
    Abandoned { registry: r }
}

/// What an interrupt found: holds every save off while it lives.
pub struct Abandoned {
    registry: std::sync::MutexGuard<'static, Registry>,
}

impl Abandoned {
    /// The files saves had completed before the interrupt (they stay: each is whole).
    pub fn written(&self) -> &[PathBuf] {
        &self.registry.written
    }
}
