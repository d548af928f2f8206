//! `map`'s progress bar on stderr: tasks done (of how many, once known), failed, rate and
//! ETA. Shown only when stderr is a terminal and `--no-progress` is not given; everything
//! else printed while it is shown goes through [`Progress::suspend`], so bar and output
//! never mix on the screen.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The bar, or nothing.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    failed: u64,
}

const WITH_TOTAL: &str =
    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} done, {msg}, {rate}, ETA {eta}";
const WITHOUT_TOTAL: &str = "{spinner} [{elapsed_precise}] {pos} done, {msg}, {rate}";

impl Progress {
    /// A bar on stderr if `wanted` and stderr is a terminal; otherwise nothing is drawn.
    pub fn new(wanted: bool) -> Progress {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style(WITHOUT_TOTAL));
            bar.set_message("0 failed");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, failed: 0 }
    }

    /// Whether a bar is shown.
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Sets the number of tasks, once it is known (from counting the input file).
    pub fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_style(style(WITH_TOTAL));
        }
    }

    /// A handle for another thread to set the total with.
    pub fn total_setter(&self) -> impl Fn(u64) + Send + 'static {
        let this = Progress {
            bar: self.bar.clone(),
            failed: 0,
        };
        move |total| this.set_total(total)
    }

    /// One more task finished.
    pub fn task_done(&mut self, ok: bool) {
        if !ok {
            self.failed += 1;
        }
        if let Some(bar) = &self.bar {
            if !ok {
                bar.set_message(format!("{} failed", self.failed));
            }
            bar.inc(1);
        }
    }

    /// Runs `f` with the bar hidden (for printing).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar from the screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants, checked by the unit test below.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.1} tasks/s", state.per_sec());
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert!(ProgressStyle::with_template(WITH_TOTAL).is_ok());
        assert!(ProgressStyle::with_template(WITHOUT_TOTAL).is_ok());
    }

    #[test]
    fn nothing_is_drawn_when_not_wanted() {
        let mut progress = Progress::new(false);
        assert!(!progress.is_shown());
        progress.task_done(false);
        assert_eq!(progress.suspend(|| 5), 5);
    }
}
