//! The one-shot run's progress bar: messages compared out of the messages to compare, counted
//! up front per (inbox, outbox) pair and advanced as each range of buckets is compared. Drawn on
//! stderr only when stderr is a terminal, without colours when `NO_COLOR` is set; service mode
//! and piped runs draw nothing. When the run ends the last line stays, at the position reached.
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar, or nothing.
pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    /// Draws nothing.
    pub(crate) fn hidden() -> Self {
        Self(None)
    }

    /// A bar on stderr when it is a terminal, else nothing.
    pub(crate) fn on_terminal(no_color: bool) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let template = if no_color {
            "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} messages ({elapsed})"
        } else {
            "{spinner:.green} {msg} [{bar:30.cyan/blue}] {human_pos}/{human_len} messages ({elapsed})"
        };
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message("counting");
        Self(Some(bar))
    }

    /// Whether anything is drawn (so whether totals are worth counting).
    pub(crate) fn is_drawn(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn add_total(&self, messages: u64) {
        if let Some(bar) = &self.0 {
            bar.inc_length(messages);
        }
    }

    /// The pair being compared.
    pub(crate) fn pair(&self, inbox: &str, source: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(format!(
                "{} <- {}",
                relay_config::printable(inbox),
                relay_config::printable(source)
            ));
        }
    }

    pub(crate) fn advance(&self, messages: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(messages);
        }
    }

    /// Leaves the last line at the position really reached (not forced to the total).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.abandon_with_message("compared");
        }
    }
}
