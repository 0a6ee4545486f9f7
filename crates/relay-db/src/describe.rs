//! Database errors as operators need to read them. `tokio_postgres::Error`'s own Display says
//! only "db error" for anything the server reported; [`describe`] adds the SQLSTATE, the
//! server's message, and its detail and hint, so every log line names what went wrong.
//!
//! For data and constraint errors (SQLSTATE classes 22 and 23) the server's DETAIL quotes the
//! values involved ("Failing row contains (…)", "Key (key)=(acct-42) already exists"): message
//! content and customer identifiers, which must not reach the logs. It is withheld for those
//! classes; the SQLSTATE, the message (which names the constraint or column) and the hint stay.

/// Longest detail quoted, in bytes: a constraint's DETAIL can repeat a whole row.
const DETAIL_MAX: usize = 512;

/// One line describing `error`: for a server error `"ERROR 42P01: relation \"x\" does not
/// exist (detail: …; hint: …)"`, with the detail cut to 512 bytes (and withheld for SQLSTATE
/// classes 22 and 23, see the module docs); otherwise the error and its causes (a connection or
/// TLS failure says why).
pub fn describe(error: &tokio_postgres::Error) -> String {
    let Some(db) = error.as_db_error() else {
        let mut text = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(e) = cause {
            text.push_str(&format!(": {e}"));
            cause = e.source();
        }
        return text;
    };
    let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    let mut extra = Vec::new();
    if let Some(detail) = db.detail() {
        if quotes_values(db.code().code()) {
            extra.push("detail withheld: it may quote message content".to_string());
        } else {
            extra.push(format!("detail: {}", shortened(detail, DETAIL_MAX)));
        }
    }
    if let Some(hint) = db.hint() {
        extra.push(format!("hint: {hint}"));
    }
    if let Some(place) = db.where_() {
        extra.push(format!("where: {}", shortened(place, DETAIL_MAX)));
    }
    if !extra.is_empty() {
        text.push_str(&format!(" ({})", extra.join("; ")));
    }
    text
}

/// Whether the server's DETAIL for this SQLSTATE quotes row values: data exceptions (class 22)
/// and integrity constraint violations (class 23), per PostgreSQL's "Appendix A. PostgreSQL
/// Error Codes".
fn quotes_values(sqlstate: &str) -> bool {
    sqlstate.starts_with("22") || sqlstate.starts_with("23")
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
fn shortened(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// The described tokio-postgres error somewhere in `error`'s causes, if any (a migration
/// error wraps it).
pub(crate) fn describe_within(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            return Some(describe(pg));
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{quotes_values, shortened};

    #[test]
    fn data_and_constraint_errors_withhold_their_detail_and_others_keep_it() {
        for code in ["22021", "22P05", "23505", "23514", "23502"] {
            assert!(quotes_values(code), "{code}");
        }
        for code in ["42P01", "40P01", "55P03", "08006", "53200"] {
            assert!(!quotes_values(code), "{code}");
        }
    }

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        assert_eq!(shortened("short", 10), "short");
        let text = "é".repeat(10);
        assert_eq!(shortened(&text, 5), "éé… (20 bytes)");
    }
}
