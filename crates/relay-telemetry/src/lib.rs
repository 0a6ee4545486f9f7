//! Logs and traces for the Relay binaries.
//!
//! Logs go to stderr as text or JSON (`LOG_FORMAT`), filtered by `RUST_LOG`; librdkafka's own log
//! lines arrive through the same subscriber (target `librdkafka`). Repeated lines are summarised
//! ([`repeats`], `LOG_REPEAT_SUMMARY_SECS`); colour only on a terminal and without `NO_COLOR`. When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are also
//! exported over OTLP/HTTP, to `http://` or `https://` collectors (TLS: [`https`]); the SDK reads
//! the other standard `OTEL_*` variables itself.
//!
//! A message carries the W3C trace context its application enqueued it with. The poller's
//! publish span and the consumer's consume span take that context as their remote parent
//! ([`follow_remote_parent`]), so one trace shows enqueue, publish and delivery to each inbox.
#![forbid(unsafe_code)]

mod https;
pub mod repeats;

use std::{collections::HashMap, time::Duration};

use opentelemetry::{propagation::TextMapPropagator, trace::TracerProvider as _};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider, Resource};
use relay_config::{LogFormat, LogSettings};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Keeps the span exporter alive; dropping it flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    repeats: repeats::RepeatFilter,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.repeats.flush();
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("could not flush the last spans: {e}");
            }
        }
    }
}

/// Whether the environment asks for span export.
fn otlp_requested() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber: logs as `settings` say, plus OTLP span export when requested.
/// `service` names the spans' service unless `OTEL_SERVICE_NAME` does.
pub fn init(settings: &LogSettings, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = settings.color && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let repeats = repeats::RepeatFilter::new(settings.repeat_window);
    let logs = match settings.format {
        LogFormat::Json => logs.json().flatten_event(true).with_filter(repeats.clone()).boxed(),
        LogFormat::Text => logs.with_filter(repeats.clone()).boxed(),
    };
    let (provider, export_error) = if otlp_requested() {
        match exporter(service) {
            Ok(provider) => (Some(provider), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let spans = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("relay")));
    tracing_subscriber::registry().with(filter).with(logs).with(spans).init();
    repeats.spawn_summariser();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(e) = export_error {
        tracing::error!(error = %e, "OTLP span export is not available; logging only");
    }
    Telemetry { provider, repeats }
}

/// How long one export request may take (the OTLP default; `OTEL_EXPORTER_OTLP_TIMEOUT` is
/// applied by the exporter on top).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

fn exporter(service: &'static str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithHttpConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(https::client(EXPORT_TIMEOUT)?)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// Makes `span` a child of the W3C trace context a message carries, when it carries one.
pub fn follow_remote_parent(span: &tracing::Span, traceparent: &str, tracestate: &str) {
    if traceparent.is_empty() {
        return;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if !tracestate.is_empty() {
        carrier.insert("tracestate".to_string(), tracestate.to_string());
    }
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Without an exporting layer there is nothing to attach the parent to; that is fine.
    let _ = span.set_parent(parent);
}
