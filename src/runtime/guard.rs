//! Keeping a runtime's panic inside the runtime: tract indexes out of bounds on some inconsistent inputs
//! (`gather.rs: index out of bounds`), and a user must see that as "tract cannot run the model", not as a crash.
//!
//! [`contain`] runs a closure with `catch_unwind` and, while it runs on this thread, a panic hook that records
//! the message and location instead of printing them (other threads' panics print as usual).

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// `Some` while [`contain`] runs on this thread: the last panic's message, once one happened.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let recorded = CAUGHT.with(|c| match c.borrow_mut().as_mut() {
                Some(slot) => {
                    let message = info
                        .payload()
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| info.payload().downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into());
                    let at = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    *slot = Some(format!("{message}{at}"));
                    true
                }
                None => false,
            });
            if !recorded {
                previous(info);
            }
        }));
    });
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message and where it happened.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let outer = CAUGHT.with(|c| c.borrow_mut().replace(None));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let message = CAUGHT
        .with(|c| std::mem::replace(&mut *c.borrow_mut(), outer))
        .flatten();
    result.map_err(|_| {
        format!(
            "it panicked ({}): a bug in the runtime, reached by this model",
            message.unwrap_or_else(|| "no message".into())
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_where() {
        let got = contain(|| -> u32 {
            let v: Vec<u32> = Vec::new();
            #[allow(clippy::unnecessary_operation)]
            v[3]
        });
        let e = got.unwrap_err();
        assert!(e.contains("index out of bounds"), "{e}");
        assert!(e.contains("guard.rs"), "{e}");
        assert_eq!(contain(|| 7), Ok(7));
    }
}
