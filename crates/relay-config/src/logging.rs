//! How a service writes its logs: the format, the summarising of repeated lines, and colour.
//!
//! Read by every binary through the same reader, so a bad value is reported with the service's
//! other problems. `NO_COLOR` follows <https://no-color.org>: set and not empty, no ANSI colour.
use std::time::Duration;

use crate::{names, Environment, LogFormat, Reader};

/// The variable that turns colour off when set to any non-empty value (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// Logging settings shared by every Relay binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// `LOG_FORMAT`: text (default) or json.
    pub format: LogFormat,
    /// `LOG_REPEAT_SUMMARY_SECS` (default 30, 0 turns summarising off): a warning or error
    /// repeated from the same place with the same message is written once, then summarised ("repeated N times
    /// in the last S s") at most once per this window while it keeps repeating.
    pub repeat_window: Duration,
    /// False when `NO_COLOR` is set and not empty; colour is also off when stderr is no terminal.
    pub color: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Text, repeat_window: Duration::from_secs(30), color: true }
    }
}

/// The given format with the other settings' defaults (for tools that do not read them).
impl From<LogFormat> for LogSettings {
    fn from(format: LogFormat) -> Self {
        Self { format, ..Self::default() }
    }
}

impl LogSettings {
    /// Reads `LOG_FORMAT`, `LOG_REPEAT_SUMMARY_SECS` and `NO_COLOR`; problems are recorded in
    /// `reader`.
    pub fn read(reader: &mut Reader<'_>) -> Self {
        let format = reader.parsed(names::LOG_FORMAT, LogFormat::Text, "text or json");
        let secs = reader.number(names::LOG_REPEAT_SUMMARY_SECS, 30, 0, 3600);
        let color = no_color_unset(reader.env());
        Self { format, repeat_window: Duration::from_secs(secs), color }
    }

    /// Reads the settings alone, for a binary with no other environment settings (every problem
    /// at once).
    pub fn from_env(env: &dyn Environment) -> Result<Self, crate::ConfigError> {
        let mut reader = Reader::new(env);
        let settings = Self::read(&mut reader);
        reader.finish().map(|()| settings)
    }
}

/// Whether colour is allowed: `NO_COLOR` unset or empty.
pub fn no_color_unset(env: &dyn Environment) -> bool {
    env.get(NO_COLOR).is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapEnv;

    #[test]
    fn defaults_then_each_variable() {
        assert_eq!(
            LogSettings::from_env(&MapEnv::new(Vec::<(&str, &str)>::new())).unwrap(),
            LogSettings::default()
        );
        let env = MapEnv::new([("LOG_FORMAT", "JSON"), ("LOG_REPEAT_SUMMARY_SECS", "0"), ("NO_COLOR", "1")]);
        let settings = LogSettings::from_env(&env).unwrap();
        assert_eq!(settings.format, LogFormat::Json);
        assert_eq!(settings.repeat_window, Duration::ZERO);
        assert!(!settings.color);
        assert!(LogSettings::from_env(&MapEnv::new([("NO_COLOR", "")])).unwrap().color, "empty means unset");
    }

    #[test]
    fn every_bad_value_is_reported_together() {
        let env = MapEnv::new([("LOG_FORMAT", "xml"), ("LOG_REPEAT_SUMMARY_SECS", "a minute")]);
        let text = LogSettings::from_env(&env).unwrap_err().to_string();
        assert!(text.contains("LOG_FORMAT") && text.contains("LOG_REPEAT_SUMMARY_SECS"), "{text}");
        let env = MapEnv::new([("LOG_REPEAT_SUMMARY_SECS", "7200")]);
        assert!(LogSettings::from_env(&env).unwrap_err().to_string().contains("outside 0..=3600"));
    }
}
