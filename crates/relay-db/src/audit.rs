//! Who acts, for the operator audit trail (`relay.operator_audit`, outbox migration V7 and inbox
//! migration V9). Every command that changes rows on an operator's behalf (relay-admin, the
//! reconciler's repair) writes one audit row per changed row in the same transaction as the
//! change; the database stamps when (`now()`) and which database role (`current_user`,
//! `session_user`), the command supplies the [`Actor`].

/// The person behind an operator command and why they ran it, as recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Who, as they name themselves (`--operator` or `RELAY_OPERATOR`); not blank.
    pub operator: String,
    /// Why (`--reason`); not blank.
    pub reason: String,
}

impl Actor {
    /// The actor recorded by a dry run, whose changes (audit rows included) are rolled back:
    /// the named operator and reason where given, otherwise a placeholder.
    pub fn dry_run(operator: Option<&str>, reason: Option<&str>) -> Self {
        Self {
            operator: operator.unwrap_or("(dry run)").to_string(),
            reason: reason.unwrap_or("(dry run)").to_string(),
        }
    }
}

/// The variable naming the operator when `--operator` is not given.
pub const OPERATOR_VARIABLE: &str = "RELAY_OPERATOR";

/// Trims an operator name or reason; `None` when it is blank.
pub fn non_blank(raw: Option<&str>) -> Option<String> {
    raw.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_runs_fill_in_what_is_missing_and_blank_names_count_as_missing() {
        let actor = Actor::dry_run(Some("ana"), None);
        assert_eq!(actor.operator, "ana");
        assert_eq!(actor.reason, "(dry run)");
        assert_eq!(non_blank(Some("  ")), None);
        assert_eq!(non_blank(Some(" ana ")).as_deref(), Some("ana"));
        assert_eq!(non_blank(None), None);
    }
}
