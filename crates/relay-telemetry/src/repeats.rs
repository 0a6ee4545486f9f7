//! Summarising repeated log lines, so that an outage stays readable: a service retrying a
//! broker that is down would otherwise write the same error many times a second.
//!
//! Only warnings and errors are summarised. An event's kind is its callsite (the `tracing` macro it came from) together with its fields,
//! every run of digits in a value counted as one: "after 3ms" and "after 12ms", `outbox_id=7`
//! and `outbox_id=8`, `retry_in_ms=200` and `retry_in_ms=400` are the same kind, while another
//! error text or another message id (a UUID) is another kind and is written. The
//! first event of a kind is written; further ones within the window are only counted, and a
//! line "repeated N times in the last S s" follows, at the kind's level, once the window is over.
//! While the kind keeps repeating that is one summary per window; once it stops, the kind is
//! forgotten and its next event is written again. Pending counts are written at exit too.
//!
//! Evidence is never summarised: an event with a field named [`EVIDENCE`] (`evidence = true`)
//! records one item an operator must find by its id (an outbox row parked, a record
//! dead-lettered, a message whose processing parked), so each is written, however many come.
//! A summary quotes the first event's `message`, `error` and `reason`.
use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tracing::{callsite::Identifier, field::Field, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};

/// The target of the summary lines.
pub const SUMMARY_TARGET: &str = "relay_telemetry::repeats";

/// The field that marks an event as per-item evidence, written every time (never summarised):
/// `tracing::error!(evidence = true, outbox_id = id, reason = %why, "parking outbox row")`.
pub const EVIDENCE: &str = "evidence";

/// At most this many kinds are tracked; beyond it, events pass unsummarised rather than grow
/// memory without bound.
const MAX_KINDS: usize = 4096;

/// How often the summariser thread looks for windows that are over.
const TICK: Duration = Duration::from_millis(500);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Kind {
    callsite: Identifier,
    text: String,
}

struct Seen {
    window_start: Instant,
    suppressed: u64,
    level: Level,
    target: &'static str,
    /// The first event's message, `error` and `reason` fields, quoted in the summary.
    message: String,
    error: Option<String>,
    reason: Option<String>,
}

/// A per-layer filter that lets the first event of a kind through and counts its repeats.
#[derive(Clone)]
pub struct RepeatFilter {
    window: Duration,
    seen: Arc<Mutex<HashMap<Kind, Seen>>>,
}

impl std::fmt::Debug for RepeatFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepeatFilter")
    }
}

impl RepeatFilter {
    /// A filter with summary window `window`; `Duration::ZERO` lets every event through.
    pub fn new(window: Duration) -> Self {
        Self { window, seen: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Whether an event of `kind` is written now (first of its kind, or summarising off).
    fn admit(
        &self,
        kind: Kind,
        level: Level,
        target: &'static str,
        fields: KindFields,
        now: Instant,
    ) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = seen.get_mut(&kind) {
            entry.suppressed += 1;
            return false;
        }
        if seen.len() < MAX_KINDS {
            let (message, error, reason) = (fields.message, fields.error, fields.reason);
            let entry = Seen { window_start: now, suppressed: 0, level, target, message, error, reason };
            seen.insert(kind, entry);
        }
        true
    }

    /// Takes the summaries due at `now` (all pending ones when `all`): kinds whose window is
    /// over with repeats get a summary and a new window; kinds without repeats are forgotten.
    fn due(&self, now: Instant, all: bool) -> Vec<Summary> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        seen.retain(|_, entry| {
            let elapsed = now.saturating_duration_since(entry.window_start);
            if !all && elapsed < self.window {
                return true;
            }
            if entry.suppressed == 0 {
                return false;
            }
            due.push(Summary {
                level: entry.level,
                target: entry.target,
                message: entry.message.clone(),
                error: entry.error.clone(),
                reason: entry.reason.clone(),
                repeated: entry.suppressed,
                seconds: elapsed.as_secs().max(1),
            });
            entry.window_start = now;
            entry.suppressed = 0;
            true
        });
        due
    }

    /// Starts the thread that writes due summaries through the global subscriber.
    pub(crate) fn spawn_summariser(&self) {
        if self.window.is_zero() {
            return;
        }
        let filter = self.clone();
        let spawned = std::thread::Builder::new().name("log-repeats".into()).spawn(move || loop {
            std::thread::sleep(TICK);
            for summary in filter.due(Instant::now(), false) {
                summary.emit();
            }
        });
        if let Err(e) = spawned {
            eprintln!("cannot start the log summariser; repeated log lines are counted until exit: {e}");
        }
    }

    /// Writes every pending count now (at exit).
    pub(crate) fn flush(&self) {
        for summary in self.due(Instant::now(), true) {
            summary.emit();
        }
    }
}

impl<S: Subscriber> Filter<S> for RepeatFilter {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        // Warnings and errors only: info lines are status (a retention pass, a reconciliation)
        // whose numbers matter each time, and are not written in bursts.
        if self.window.is_zero()
            || *meta.level() > Level::WARN
            || meta.target() == SUMMARY_TARGET
            || meta.fields().field(EVIDENCE).is_some()
        {
            return true;
        }
        let mut fields = KindFields::default();
        event.record(&mut fields);
        let kind = Kind { callsite: meta.callsite(), text: std::mem::take(&mut fields.kind) };
        self.admit(kind, *meta.level(), meta.target(), fields, Instant::now())
    }
}

/// An event's fields, each value with its digits folded (its kind), and its message.
#[derive(Default)]
struct KindFields {
    kind: String,
    message: String,
    error: Option<String>,
    reason: Option<String>,
}

impl KindFields {
    fn add(&mut self, field: &Field, text: &str) {
        self.kind.push_str(field.name());
        self.kind.push('=');
        fold_digits(text, &mut self.kind);
        self.kind.push('\u{1f}');
        match field.name() {
            "message" => self.message = text.to_string(),
            "error" => self.error = Some(text.to_string()),
            "reason" => self.reason = Some(text.to_string()),
            _ => {}
        }
    }
}

impl tracing::field::Visit for KindFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.add(field, &text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value);
    }
}

/// Appends `text` to `out` with every run of ASCII digits written as one `#`.
fn fold_digits(text: &str, out: &mut String) {
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
}

/// One summary line to write.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    level: Level,
    target: &'static str,
    message: String,
    error: Option<String>,
    reason: Option<String>,
    repeated: u64,
    seconds: u64,
}

impl Summary {
    fn emit(&self) {
        let Summary { message, error, reason, repeated, seconds, target, .. } = self;
        macro_rules! summary {
            ($level:ident) => {
                tracing::$level!(
                    target: SUMMARY_TARGET,
                    repeated,
                    seconds,
                    of = target,
                    error = error.as_deref(),
                    reason = reason.as_deref(),
                    "{message} (repeated {repeated} times in the last {seconds} s)"
                )
            };
        }
        match self.level {
            Level::ERROR => summary!(error),
            Level::WARN => summary!(warn),
            Level::INFO => summary!(info),
            Level::DEBUG => summary!(debug),
            Level::TRACE => summary!(trace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Kind {
        struct Site;
        static SITE: Site = Site;
        impl tracing::callsite::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("never registered")
            }
        }
        Kind { callsite: Identifier(&SITE), text: text.into() }
    }

    #[test]
    fn first_of_a_kind_passes_and_repeats_are_summarised_once_per_window() {
        let filter = RepeatFilter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let admit = |text: &str, at: Duration| {
            let fields = KindFields { message: text.into(), ..KindFields::default() };
            filter.admit(kind(text), Level::WARN, "t", fields, t0 + at)
        };
        assert!(admit("broker down#", Duration::ZERO));
        assert!(admit("database down#", Duration::from_secs(1)), "another kind passes");
        for i in 0..40 {
            assert!(
                !admit("broker down#", Duration::from_millis(100 * i)),
                "repeat {i} is counted, not written"
            );
        }
        assert_eq!(filter.due(t0 + Duration::from_secs(9), false), vec![], "the window is not over");
        let due = filter.due(t0 + Duration::from_secs(11), false);
        assert_eq!(due.len(), 1, "database down did not repeat: forgotten without a summary");
        assert_eq!((due[0].repeated, due[0].seconds, due[0].message.as_str()), (40, 11, "broker down#"));
        assert!(
            !admit("broker down#", Duration::from_secs(12)),
            "still repeating: counted in the new window"
        );
        assert!(admit("database down#", Duration::from_secs(12)), "a forgotten kind is written again");
        let flushed = filter.due(t0 + Duration::from_secs(13), true);
        assert_eq!(
            flushed.iter().map(|s| s.repeated).collect::<Vec<_>>(),
            vec![1],
            "exit writes pending counts"
        );
    }

    #[test]
    fn through_a_subscriber_one_line_then_one_summary_with_the_count() {
        use tracing_subscriber::{layer::SubscriberExt, Layer};
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buffer = Arc::clone(&buffer);
            move || Captured(Arc::clone(&buffer))
        };
        let filter = RepeatFilter::new(Duration::from_secs(30));
        let logs = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false);
        let subscriber = tracing_subscriber::registry().with(logs.with_filter(filter.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for attempt in 0..50 {
                tracing::warn!(attempt, error = "connection refused", "inbox write failed; retrying");
            }
            tracing::warn!(error = "password authentication failed", "inbox write failed; retrying");
            for id in ["0b6f3c1e-5d2a-4c1b-9e7f-2a1d3c4b5e6f", "7c9e2f4a-1b3d-4e5f-8a6b-9c0d1e2f3a4b"] {
                tracing::warn!(finding = "missing", message_id = id, "reconciliation finding");
            }
            for deleted in [4, 4] {
                tracing::info!(deleted, "inbox retention pass");
            }
            filter.flush();
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(lines[0].contains("connection refused") && lines[0].contains("attempt=0"), "{text}");
        assert!(lines[1].contains("password authentication failed"), "another error is another kind: {text}");
        assert!(
            lines[2].contains("0b6f3c1e") && lines[3].contains("7c9e2f4a"),
            "each message id is written: {text}"
        );
        assert!(
            lines[4].contains("deleted=4") && lines[5].contains("deleted=4"),
            "info lines are all written: {text}"
        );
        assert!(lines[6].contains("inbox write failed; retrying (repeated 49 times in the last"), "{text}");
        assert!(lines[6].contains("error=\"connection refused\""), "the summary names the error: {text}");
    }

    #[test]
    fn evidence_is_written_for_every_item_and_summaries_quote_the_reason() {
        use tracing_subscriber::{layer::SubscriberExt, Layer};
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buffer = Arc::clone(&buffer);
            move || Captured(Arc::clone(&buffer))
        };
        let filter = RepeatFilter::new(Duration::from_secs(30));
        let logs = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false);
        let subscriber = tracing_subscriber::registry().with(logs.with_filter(filter.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for outbox_id in 1000..1025 {
                tracing::error!(
                    evidence = true,
                    outbox_id,
                    reason = "payload too large",
                    "parking outbox row"
                );
            }
            for offset in 7..19 {
                tracing::warn!(
                    evidence = true,
                    partition = 3,
                    offset,
                    reason = "not an envelope",
                    "dead-lettering record"
                );
            }
            for attempt in 0..5 {
                tracing::warn!(attempt, reason = "lease lost", "leadership ended; retrying");
            }
            filter.flush();
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for outbox_id in 1000..1025 {
            let needle = format!("outbox_id={outbox_id} ");
            assert_eq!(lines.iter().filter(|l| l.contains(&needle)).count(), 1, "{needle}: {text}");
        }
        for offset in 7..19 {
            let needle = format!("offset={offset} ");
            assert_eq!(lines.iter().filter(|l| l.contains(&needle)).count(), 1, "{needle}: {text}");
        }
        assert!(!text.contains("parking outbox row (repeated"), "evidence is never summarised: {text}");
        let summary = lines.iter().find(|l| l.contains("(repeated 4 times")).expect("a summary");
        assert!(summary.contains("reason=\"lease lost\""), "the summary quotes the reason: {text}");
        assert_eq!(lines.len(), 25 + 12 + 1 + 1, "{text}");
    }

    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn digits_are_folded_so_counts_and_durations_do_not_make_new_kinds() {
        let mut a = String::new();
        let mut b = String::new();
        fold_digits("Connect to 127.0.0.1:9092 failed (after 3ms, 12 identical)", &mut a);
        fold_digits("Connect to 127.0.0.1:9092 failed (after 1041ms, 7 identical)", &mut b);
        assert_eq!(a, b);
        assert_eq!(a, "Connect to #.#.#.#:# failed (after #ms, # identical)");
    }
}
