//! The one-shot run's progress bar: messages compared out of the messages to compare, counted
//! up front per (inbox, outbox) pair and advanced as each range of buckets is compared. Drawn on
//! stderr only when stderr is a terminal, without colours when `NO_COLOR` is set; service mode
//! and piped runs draw nothing. When the run ends the last line stays, at the position reached.
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar, or nothing.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    no_color: bool,
}

impl Progress {
    /// Draws nothing.
    pub(crate) fn hidden() -> Self {
        Self { bar: None, no_color: true }
    }

    /// A bar on stderr when it is a terminal, else nothing. It says it is counting until
    /// [`Progress::start`].
    pub(crate) fn on_terminal(no_color: bool) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::new(0);
        bar.set_style(style(if no_color { "{spinner} {msg}" } else { "{spinner:.green} {msg}" }));
        bar.set_message("counting the messages to compare");
        Self { bar: Some(bar), no_color }
    }

    /// The totals are in: from now on the bar shows messages compared out of the total.
    pub(crate) fn start(&self) {
        if let Some(bar) = &self.bar {
            bar.set_style(style(if self.no_color {
                "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} messages ({elapsed})"
            } else {
                "{spinner:.green} {msg} [{bar:30.cyan/blue}] {human_pos}/{human_len} messages ({elapsed})"
            }));
        }
    }

    /// Whether anything is drawn (so whether totals are worth counting).
    pub(crate) fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    pub(crate) fn add_total(&self, messages: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(messages);
        }
    }

    /// The pair being compared.
    pub(crate) fn pair(&self, inbox: &str, source: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} <- {}",
                relay_config::printable(inbox),
                relay_config::printable(source)
            ));
        }
    }

    pub(crate) fn advance(&self, messages: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(messages);
        }
    }

    /// Leaves the last line at the position really reached (not forced to the total).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message("compared");
            // The report (stdout) and any error start on the next line of the same terminal.
            eprintln!();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
