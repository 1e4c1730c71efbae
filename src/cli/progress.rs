//! A spinner for slow steps: drawn on a terminal only, and only once a step has lasted a second.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Step {
    bar: Option<ProgressBar>,
}

impl Step {
    pub fn start(message: &str) -> Step {
        if !std::io::stderr().is_terminal() {
            return Step { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        let delayed = bar.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            if !delayed.is_finished() {
                delayed.set_draw_target(ProgressDrawTarget::stderr());
                delayed.enable_steady_tick(Duration::from_millis(100));
            }
        });
        Step { bar: Some(bar) }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The library's progress reports as spinners, one stage at a time.
#[derive(Default)]
pub struct Stages {
    current: Option<Step>,
}

impl crate::convert::Progress for Stages {
    fn stage(&mut self, what: &str) {
        self.current = None;
        self.current = Some(Step::start(what));
    }

    fn done(&mut self) {
        self.current = None;
    }
}
