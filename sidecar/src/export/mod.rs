//! Getting spans out: OTLP (grpc or http/protobuf, through opentelemetry-otlp), console
//! (OTLP/JSON lines on stdout) or none, behind a bounded queue with batching and retries.
//!
//! Why not the SDK's BatchSpanProcessor: gotel must count every span it drops and say so, keep
//! running while the collector is down and deliver again after it returns. The SDK's processor
//! keeps its drop count private and does not retry. This one honours the same `OTEL_BSP_*`
//! variables with the specification's defaults.
mod pipeline;

use std::time::Duration;

use crate::exit::Failure;
use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    trace::{Sampler, SpanData, SpanExporter},
    Resource,
};

pub use pipeline::{ExportStats, Pipeline};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

pub(crate) fn env_u64(name: &str, default: u64) -> Result<u64, Failure> {
    match env(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| Failure::config(format!("{name}={v} is not a whole number"))),
    }
}

/// `OTEL_BSP_*` settings, with the specification's defaults.
#[derive(Clone, Debug)]
pub struct BatchSettings {
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub export_timeout: Duration,
}

impl BatchSettings {
    pub fn from_env() -> Result<Self, Failure> {
        let max_queue_size = env_u64("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?.max(1) as usize;
        Ok(BatchSettings {
            schedule_delay: Duration::from_millis(env_u64("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            max_queue_size,
            max_export_batch_size: (env_u64("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.max(1) as usize)
                .min(max_queue_size),
            export_timeout: Duration::from_millis(env_u64("OTEL_BSP_EXPORT_TIMEOUT", 30000)?.max(1)),
        })
    }
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
pub fn sampler_from_env() -> Result<Sampler, Failure> {
    let name = env("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
    let ratio = || -> Result<f64, Failure> {
        match env("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(v) => v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                Failure::config(format!("OTEL_TRACES_SAMPLER_ARG={v}: expected a ratio between 0 and 1"))
            }),
        }
    };
    Ok(match name.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?))),
        other => {
            return Err(Failure::config(format!(
                "OTEL_TRACES_SAMPLER={other} is not supported; use always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            )))
        }
    })
}

/// What the process looks like to the backend.
pub struct ResourceFacts<'a> {
    pub exe_name: &'a str,
    pub pid: u32,
    pub go_version: Option<&'a str>,
    /// Node mode's `service.name` for this target (selector, pod label, container): wins over
    /// the environment, which is gotel's own, not the target's.
    pub service_name: Option<&'a str>,
    /// More attributes (Kubernetes: `k8s.*`, `container.id`).
    pub extra: &'a [KeyValue],
}

/// `service.name` from OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES), else the executable's
/// name; `process.*` facts; `telemetry.sdk.*` and OTEL_RESOURCE_ATTRIBUTES from the SDK.
pub fn resource(facts: &ResourceFacts) -> Resource {
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    let mut builder = Resource::builder();
    if let Some(name) = facts.service_name {
        builder = builder.with_service_name(name.to_string());
    } else if !named {
        builder = builder.with_service_name(facts.exe_name.to_string());
    }
    let mut attrs = vec![
        KeyValue::new("process.pid", facts.pid as i64),
        KeyValue::new("process.executable.name", facts.exe_name.to_string()),
        KeyValue::new("process.runtime.name", "go"),
        KeyValue::new("telemetry.distro.name", "gotel"),
        KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(v) = facts.go_version {
        // As the runtime reports it (runtime.Version()), like the OpenTelemetry Go SDK.
        attrs.push(KeyValue::new("process.runtime.version", v.to_string()));
    }
    attrs.extend(facts.extra.iter().cloned());
    builder.with_attributes(attrs).build()
}

/// Prints each batch as one OTLP/JSON `ExportTraceServiceRequest` line (the protobuf JSON
/// mapping OTLP/HTTP uses: hex ids, camelCase fields) on stdout, or on stderr in launch mode:
/// there the program inherits gotel's stdout, which must stay the program's own output (a
/// pipeline reading it would get spans mixed in). Each line is one `write` so the program's
/// own stderr lines do not cut into it (up to the pipe's atomic size).
#[derive(Debug, Default)]
pub struct ConsoleExporter {
    resource: Option<Resource>,
    to_stderr: bool,
}

impl SpanExporter for ConsoleExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use opentelemetry_proto::{
            tonic::collector::trace::v1::ExportTraceServiceRequest,
            transform::{common::tonic::ResourceAttributesWithSchema, trace::tonic::group_spans_by_resource_and_scope},
        };
        let resource = self.resource.clone().unwrap_or_else(|| Resource::builder_empty().build());
        let schema = ResourceAttributesWithSchema::from(&resource);
        let request = ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, &schema) };
        let mut line = serde_json::to_vec(&request).map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        line.push(b'\n');
        use std::io::Write;
        let written = if self.to_stderr {
            std::io::stderr().lock().write_all(&line)
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&line).and_then(|_| out.flush())
        };
        written.map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

enum AnyExporter {
    // Boxed: the OTLP exporter is 40 times the size of the console one.
    Otlp(Box<opentelemetry_otlp::SpanExporter>),
    Console(ConsoleExporter),
}

impl AnyExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            AnyExporter::Otlp(e) => e.export(batch).await,
            AnyExporter::Console(e) => e.export(batch).await,
        }
    }
    fn set_resource(&mut self, r: &Resource) {
        match self {
            AnyExporter::Otlp(e) => e.set_resource(r),
            AnyExporter::Console(e) => e.set_resource(r),
        }
    }
}

/// Values the exporter would otherwise take or ignore silently.
fn check_otlp_env() -> Result<(), Failure> {
    for var in ["OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"] {
        if let Some(v) = env(var) {
            if !["gzip", "zstd", "none"].contains(&v.as_str()) {
                return Err(Failure::config(format!("{var}={v}: use gzip, zstd (grpc only) or none")));
            }
        }
    }
    for var in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
        if let Some(v) = env(var) {
            if v.split(',')
                .any(|kv| !kv.trim().is_empty() && kv.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()))
            {
                return Err(Failure::config(format!("{var}: expected key=value pairs separated by commas, got {v:?}")));
            }
        }
    }
    Ok(())
}

fn otlp_exporter() -> Result<opentelemetry_otlp::SpanExporter, Failure> {
    check_otlp_env()?;
    for var in ["OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"] {
        if let Some(v) = env(var) {
            // Refusing is safer than silently sending to an unverified peer.
            return Err(Failure::config(format!(
                "{var}={v}: custom CA certificates are not supported yet; export to a collector on a trusted network over http:// or unset it"
            )));
        }
    }
    use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    // One retry layer: export::pipeline's (attempts, backoff, counted failures, a request split
    // when refused as too large). The exporter's own retries (opentelemetry-otlp 0.33: 3 per
    // call by default) would run inside each of those attempts, unseen by its counters.
    let built = match protocol.as_str() {
        "grpc" => {
            opentelemetry_otlp::SpanExporter::builder().with_tonic().with_retry_policy(RetryPolicy::disabled()).build()
        }
        "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_retry_policy(RetryPolicy::disabled())
            .build(),
        other => {
            return Err(Failure::config(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use grpc or http/protobuf"
            )))
        }
    };
    built.map_err(|e| Failure::config(format!("OTLP exporter ({protocol}): {e}")))
}

impl Pipeline {
    /// The exporter from the environment. `Ok(None)` when exporting is off (`none`, OTEL_SDK_DISABLED).
    /// `launch`: the program shares gotel's stdout, so the console exporter writes to stderr.
    pub fn from_env(resource: Resource, batch: &BatchSettings, launch: bool) -> Result<Option<Pipeline>, Failure> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let kind = env("OTEL_TRACES_EXPORTER").unwrap_or_else(|| "otlp".into());
        let mut exporter = match kind.split(',').next().unwrap_or("otlp").trim() {
            "otlp" => AnyExporter::Otlp(Box::new(otlp_exporter()?)),
            "console" | "logging" => AnyExporter::Console(ConsoleExporter { resource: None, to_stderr: launch }),
            "none" => return Ok(None),
            other => {
                return Err(Failure::config(format!(
                    "OTEL_TRACES_EXPORTER={other} is not supported; use otlp, console or none"
                )))
            }
        };
        exporter.set_resource(&resource);
        Ok(Some(Pipeline::start(exporter, batch.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_settings_have_spec_defaults() {
        let s = BatchSettings::from_env().unwrap();
        if std::env::var("OTEL_BSP_SCHEDULE_DELAY").is_err() {
            assert_eq!(s.schedule_delay, Duration::from_millis(5000));
        }
        assert!(s.max_export_batch_size <= s.max_queue_size);
    }
}
