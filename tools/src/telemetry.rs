//! Logs and traces of a `chorus` process: `tracing` to standard error
//! (filtered by `RUST_LOG`), and, when a process's `otlp_endpoint` is set,
//! its spans to an OpenTelemetry collector by OTLP/HTTP (protobuf).
//!
//! The subscriber is set up once in `main`, before any configuration is
//! read; a command that finds an `otlp_endpoint` in its configuration then
//! turns the export on ([`export_traces`]), through a reloadable layer that
//! is empty (and costs nothing) until then. The export is compiled in only
//! with the `otlp` feature of `chorus-tools` (off by default: it adds the
//! OpenTelemetry SDK and exporter to the build); without it, an endpoint is
//! refused with a clear error rather than ignored.

use std::sync::OnceLock;

use anyhow::Result;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// The layer that exports spans, empty until [`export_traces`].
type TraceLayer = Option<Box<dyn Layer<Registry> + Send + Sync>>;

static TRACES: OnceLock<reload::Handle<TraceLayer, Registry>> = OnceLock::new();

/// Installs the global subscriber: logs to standard error, and an empty
/// slot for the trace export.
pub fn init() {
    let (traces, handle) = reload::Layer::new(None::<Box<dyn Layer<Registry> + Send + Sync>>);
    let _ = TRACES.set(handle);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,quinn=warn"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry().with(traces).with(filter).with(logs).init();
}

/// Exports this process's spans to `endpoint` (an OTLP/HTTP traces URL such
/// as `http://127.0.0.1:4318/v1/traces`) as service `chorus-<role>`; nothing
/// without an endpoint.
///
/// # Errors
/// When the exporter cannot be built, or this binary was built without the
/// `otlp` feature.
pub fn export_traces(endpoint: Option<&str>, role: crate::metrics::Role) -> Result<()> {
    let Some(endpoint) = endpoint else { return Ok(()) };
    otlp::start(endpoint, role)
}

/// Flushes and stops the trace export, if it runs (at exit).
pub fn shutdown() {
    otlp::shutdown();
}

#[cfg(not(feature = "otlp"))]
mod otlp {
    pub(super) fn start(endpoint: &str, _role: crate::metrics::Role) -> anyhow::Result<()> {
        anyhow::bail!(
            "otlp_endpoint is set ({endpoint}) but this chorus was built without OTLP export: build it with the `otlp` feature (on by default; this one was built with --no-default-features), or unset otlp_endpoint"
        )
    }

    pub(super) fn shutdown() {}
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::OnceLock;

    use anyhow::{Context, Result};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    pub(super) fn start(endpoint: &str, role: crate::metrics::Role) -> Result<()> {
        let handle = super::TRACES.get().context("tracing is not set up (telemetry::init)")?;
        // The blocking HTTP client runs its own runtime: built (and, in the
        // exporter's thread, dropped) outside tokio's.
        let url = endpoint.to_owned();
        let exporter = std::thread::spawn(move || {
            SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).with_endpoint(url).build()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the OTLP exporter's setup panicked"))?
        .with_context(|| format!("OTLP exporter for {endpoint}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(format!("chorus-{}", role.label())).build())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("chorus"));
        handle.reload(Some(Box::new(layer) as Box<dyn tracing_subscriber::Layer<_> + Send + Sync>))?;
        let _ = PROVIDER.set(provider);
        tracing::info!(%endpoint, "exporting traces by OTLP");
        Ok(())
    }

    pub(super) fn shutdown() {
        if let Some(p) = PROVIDER.get() {
            if let Err(e) = p.shutdown() {
                eprintln!("OTLP trace export did not shut down cleanly: {e}");
            }
        }
    }
}
