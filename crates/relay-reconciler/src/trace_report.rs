//! What `reconciler trace` found about a message's path, and how it is shown: one line per
//! step for people (every name, key and reason escaped by `relay_config::printable`), JSON for
//! scripts (`relay_config::json_printable`). Times are UTC, as PostgreSQL renders them.
use std::fmt::Write as _;

use relay_config::{json_printable, printable};
use serde::Serialize;
use uuid::Uuid;

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct Trace {
    pub query: Query,
    /// False when the message (or key) is in no outbox, inbox or dead letter.
    pub found: bool,
    pub messages: Vec<MessagePath>,
    /// Key query only: dead letters of that key whose value does not decode, so their message
    /// id is unknown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undecodable_dead_letters: Vec<DeadLetterStep>,
    /// The databases looked at, by source and inbox name.
    pub checked_outboxes: Vec<String>,
    pub checked_inboxes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Query {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One message from its outbox to every inbox.
#[derive(Debug, Serialize)]
pub struct MessagePath {
    pub message_id: Uuid,
    pub topic: Option<String>,
    pub key: Option<String>,
    /// The outbox rows holding it (one, unless a source was misconfigured).
    pub outboxes: Vec<OutboxStep>,
    /// Why no outbox row is shown, when none is.
    pub outbox_note: Option<String>,
    pub inboxes: Vec<InboxStep>,
}

/// The origin side: `state` is `published`, `pending` (not sent yet), `parked` (the broker
/// refused it; see `park_reason`) or `discarded` (parked, then given up by an operator).
#[derive(Debug, Serialize)]
pub struct OutboxStep {
    pub source: String,
    /// relay.outbox.id (the inboxes' `sequence`).
    pub id: i64,
    pub state: &'static str,
    pub enqueued_at: Option<String>,
    pub published_at: Option<String>,
    pub kafka_partition: Option<i64>,
    pub kafka_offset: Option<i64>,
    pub parked_at: Option<String>,
    pub park_reason: Option<String>,
    pub discarded_at: Option<String>,
    pub discard_reason: Option<String>,
}

/// One inbox: `state` is `stored`, `dead_lettered` (not stored; see `dead_letters`),
/// `not_stored` (neither) or `not_subscribed` (the inbox does not subscribe to the topic).
#[derive(Debug, Serialize)]
pub struct InboxStep {
    pub inbox: String,
    pub state: &'static str,
    pub stored: Option<Stored>,
    /// Whether the inbox's receiving service processes messages through `relay.claim`.
    pub processing_enabled: bool,
    pub processing: Option<ProcessingStep>,
    /// Dead letters whose envelope names this message (re-driven ones included).
    pub dead_letters: Vec<DeadLetterStep>,
    /// Why dead letters were not looked at, when they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters_note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Stored {
    pub source: Option<String>,
    pub received_at: Option<String>,
    pub sequence: Option<i64>,
    pub kafka_topic: Option<String>,
    pub kafka_partition: Option<i64>,
    pub kafka_offset: Option<i64>,
}

/// The receiving service's work: `state` is `processed`, `skipped` (by an operator, see
/// `skip_reason`), `parked` (its key waits; see `park_reason`), `failing` (retried after
/// `next_attempt_at`) or `waiting` (not claimed yet).
#[derive(Debug, Serialize)]
pub struct ProcessingStep {
    pub state: &'static str,
    /// Failed attempts recorded by `relay.failed`.
    pub attempts: i64,
    pub processed_at: Option<String>,
    pub skipped_at: Option<String>,
    pub skip_reason: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub parked_at: Option<String>,
    pub park_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterStep {
    pub inbox: String,
    pub id: i64,
    pub kafka_topic: Option<String>,
    pub kafka_partition: Option<i64>,
    pub kafka_offset: Option<i64>,
    pub created_at: Option<String>,
    pub error: Option<String>,
    pub resolved_at: Option<String>,
    pub resolution: Option<String>,
    pub resolution_note: Option<String>,
}

fn or_dash(v: &Option<impl ToString>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), ToString::to_string)
}

impl Trace {
    pub fn to_json(&self) -> String {
        json_printable(
            serde_json::to_string_pretty(self)
                .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string())),
        )
    }

    /// One block per message, one line per step; every line escaped.
    pub fn to_table(&self) -> String {
        let mut lines = Vec::new();
        for m in &self.messages {
            lines.push(format!(
                "message {}  topic {}  key {}",
                m.message_id,
                or_dash(&m.topic),
                or_dash(&m.key)
            ));
            for o in &m.outboxes {
                lines.push(outbox_line(o));
            }
            if let Some(note) = &m.outbox_note {
                lines.push(format!("  outbox: {note}"));
            }
            for i in &m.inboxes {
                lines.push(inbox_line(i));
                for d in &i.dead_letters {
                    lines.push(format!("    {}", dead_letter_text(d)));
                }
            }
        }
        if !self.undecodable_dead_letters.is_empty() {
            lines.push("dead letters of this key whose message id cannot be read:".into());
            for d in &self.undecodable_dead_letters {
                lines.push(format!("  inbox {}: {}", d.inbox, dead_letter_text(d)));
            }
        }
        if !self.found {
            let what = match (&self.query.message_id, &self.query.topic, &self.query.key) {
                (Some(id), _, _) => format!("message {id}"),
                (None, topic, key) => format!("message of topic {} key {}", or_dash(topic), or_dash(key)),
            };
            lines.push(format!(
                "NOT FOUND: no {what} in outboxes {} or inboxes {} (dead letters included)",
                self.checked_outboxes.join(", "),
                self.checked_inboxes.join(", ")
            ));
        }
        let mut out = String::new();
        for line in lines {
            let _ = writeln!(out, "{}", printable(&line));
        }
        out
    }
}

fn outbox_line(o: &OutboxStep) -> String {
    let mut line = format!("  outbox {}: enqueued {} (id {})", o.source, or_dash(&o.enqueued_at), o.id);
    match o.state {
        "published" => {
            let _ = write!(
                line,
                "; published {} to partition {} offset {}",
                or_dash(&o.published_at),
                or_dash(&o.kafka_partition),
                or_dash(&o.kafka_offset)
            );
        }
        "parked" | "discarded" => {
            let _ = write!(line, "; PARKED {}: {}", or_dash(&o.parked_at), or_dash(&o.park_reason));
            if o.state == "discarded" {
                let _ =
                    write!(line, "; discarded {}: {}", or_dash(&o.discarded_at), or_dash(&o.discard_reason));
            }
        }
        _ => line.push_str("; not published yet"),
    }
    line
}

fn inbox_line(i: &InboxStep) -> String {
    let mut line = format!("  inbox {}: ", i.inbox);
    match (&i.stored, i.state) {
        (Some(s), _) => {
            let _ = write!(
                line,
                "stored {} from {} (partition {} offset {}, sequence {})",
                or_dash(&s.received_at),
                or_dash(&s.source),
                or_dash(&s.kafka_partition),
                or_dash(&s.kafka_offset),
                or_dash(&s.sequence)
            );
        }
        (None, "not_subscribed") => line.push_str("does not subscribe to this topic"),
        (None, "dead_lettered") => line.push_str("NOT STORED: dead-lettered"),
        (None, _) => line.push_str("NOT STORED"),
    }
    if let Some(note) = &i.dead_letters_note {
        let _ = write!(line, " ({note})");
    }
    match &i.processing {
        Some(p) => {
            let tries = format!("{} failed attempt{}", p.attempts, if p.attempts == 1 { "" } else { "s" });
            let _ = match p.state {
                "processed" => write!(line, "; processed {} after {tries}", or_dash(&p.processed_at)),
                "skipped" => write!(
                    line,
                    "; SKIPPED {} after {tries}: {}",
                    or_dash(&p.skipped_at),
                    or_dash(&p.skip_reason)
                ),
                "parked" => {
                    write!(
                        line,
                        "; PARKED {} after {tries}: {}",
                        or_dash(&p.parked_at),
                        or_dash(&p.park_reason)
                    )
                }
                "failing" => write!(
                    line,
                    "; not processed: {tries}, next {}; last error: {}",
                    or_dash(&p.next_attempt_at),
                    or_dash(&p.last_error)
                ),
                _ => write!(line, "; not processed yet"),
            };
        }
        None if i.stored.is_some() && !i.processing_enabled => line.push_str("; (processing not enabled)"),
        None => {}
    }
    line
}

fn dead_letter_text(d: &DeadLetterStep) -> String {
    let mut text = format!(
        "dead letter {} {} (partition {} offset {}): {}",
        d.id,
        or_dash(&d.created_at),
        or_dash(&d.kafka_partition),
        or_dash(&d.kafka_offset),
        or_dash(&d.error)
    );
    if let Some(resolution) = &d.resolution {
        let _ = write!(text, "; {resolution} {}: {}", or_dash(&d.resolved_at), or_dash(&d.resolution_note));
    }
    text
}
