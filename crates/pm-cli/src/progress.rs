//! The training progress bar: step, loss, images/s and ETA on a terminal; the same as a log
//! line per metrics window when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pm_train::{Progress, StepMetrics};

/// A bar on stderr.
pub(crate) struct Bar {
    label: &'static str,
    bar: ProgressBar,
    terminal: bool,
    started: Instant,
    first_step: u64,
}

impl Bar {
    pub(crate) fn new(label: &'static str) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        if !terminal {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let style = ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label);
        Self {
            label,
            bar,
            terminal,
            started: Instant::now(),
            first_step: 0,
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: u64, done: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.reset_eta();
        self.started = Instant::now();
        self.first_step = done;
    }

    fn update(&mut self, m: &StepMetrics) {
        self.bar.set_position(m.step);
        self.bar.set_message(format!(
            "loss {:.3} acc {:.2} {:.0} img/s",
            m.loss, m.batch_accuracy, m.images_per_second
        ));
        if !self.terminal {
            let total = self.bar.length().unwrap_or(m.step);
            let done = m.step.saturating_sub(self.first_step).max(1) as f64;
            let per_step = self.started.elapsed().as_secs_f64() / done;
            let eta = per_step * total.saturating_sub(m.step) as f64;
            tracing::info!(
                target: "progress",
                "{} step {}/{} loss {:.4} batch_acc {:.3} {:.1} img/s lr {:.4} memory {} ETA {:.0}s",
                self.label, m.step, total, m.loss, m.batch_accuracy, m.images_per_second, m.lr,
                m.memory_rows, eta
            );
        }
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}
