//! `otlp-sink`: a small but real OTLP/trace receiver for gotel's tests.
//!
//! ```text
//! otlp-sink --grpc 127.0.0.1:0 --http 127.0.0.1:0 --out spans.jsonl
//! ```
//!
//! * gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` (tonic server; gzip and
//!   zstd request compression accepted).
//! * HTTP: `POST /v1/traces` with `application/x-protobuf` or `application/json` bodies
//!   (`Content-Encoding: gzip` accepted), HTTP/1.1 and h2c.
//!
//! The first stdout line is one JSON object with the bound addresses, e.g.
//! `{"grpc":"127.0.0.1:40123","http":"127.0.0.1:40124"}` (a port of 0 picks a free one).
//! Every received span is appended to `--out` as one flattened JSON line (see
//! [`gotel_e2e::sink::flatten_request`]); the file is flushed after each request, so a reader that
//! polls it sees whole lines. SIGINT/SIGTERM end the sink.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tokio::net::TcpListener;

use gotel_e2e::sink::flatten_request;

#[derive(Parser, Debug)]
#[command(about = "OTLP trace receiver for tests: writes every span as a JSON line")]
struct Args {
    /// gRPC listen address (127.0.0.1:0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    grpc: SocketAddr,
    /// HTTP listen address for POST /v1/traces.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// File the spans are appended to, one JSON object per line.
    #[arg(long)]
    out: PathBuf,
    /// Largest request accepted, like a real collector (gRPC servers default to 4 MiB): larger
    /// gRPC messages are refused with OUT_OF_RANGE (as tonic does), larger HTTP bodies with 413.
    #[arg(long, default_value_t = 4 << 20)]
    max_request_bytes: usize,
}

struct Out {
    file: Mutex<std::fs::File>,
}

impl Out {
    fn write(&self, req: &ExportTraceServiceRequest, transport: &str) -> anyhow::Result<usize> {
        let lines = flatten_request(req, transport);
        let mut buf = Vec::new();
        for l in &lines {
            serde_json::to_writer(&mut buf, l)?;
            buf.push(b'\n');
        }
        let mut f = self.file.lock().unwrap();
        f.write_all(&buf)?;
        f.flush()?;
        Ok(lines.len())
    }
}

struct Grpc {
    out: Arc<Out>,
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        match self.out.write(&req, "grpc") {
            Ok(n) => {
                eprintln!("otlp-sink: grpc export: {n} spans");
                Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
            }
            Err(e) => Err(tonic::Status::internal(format!("write: {e:#}"))),
        }
    }
}

fn reply(status: StatusCode, ctype: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder().status(status).header("content-type", ctype).body(Full::new(Bytes::from(body))).unwrap()
}

async fn http_handler(
    out: Arc<Out>,
    max_request_bytes: usize,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() != "/v1/traces" {
        return Ok(reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()));
    }
    if req.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", b"POST only\n".to_vec()));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let ctype = header("content-type");
    let encoding = header("content-encoding");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", format!("body: {e}\n").into())),
    };
    if body.len() > max_request_bytes {
        eprintln!("otlp-sink: http: refused a {} byte request (limit {max_request_bytes})", body.len());
        return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", b"request too large\n".to_vec()));
    }
    let body: Vec<u8> = match encoding.as_str() {
        "" | "identity" => body.to_vec(),
        "gzip" => {
            let mut d = flate2::read::GzDecoder::new(&body[..]);
            let mut v = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut d, &mut v) {
                return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", format!("gzip: {e}\n").into()));
            }
            v
        }
        other => {
            return Ok(reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "text/plain",
                format!("content-encoding {other} not supported\n").into(),
            ))
        }
    };
    let json = ctype.starts_with("application/json");
    let parsed: Result<ExportTraceServiceRequest, String> = if json {
        serde_json::from_slice(&body).map_err(|e| format!("json: {e}"))
    } else if ctype.starts_with("application/x-protobuf") || ctype.starts_with("application/protobuf") {
        ExportTraceServiceRequest::decode(&body[..]).map_err(|e| format!("protobuf: {e}"))
    } else {
        return Ok(reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            format!("content-type {ctype:?} not supported\n").into(),
        ));
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("otlp-sink: http: bad request: {e}");
            return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n").into()));
        }
    };
    match out.write(&parsed, "http") {
        Ok(n) => eprintln!("otlp-sink: http export ({}): {n} spans", if json { "json" } else { "protobuf" }),
        Err(e) => return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("write: {e:#}\n").into())),
    }
    let resp = ExportTraceServiceResponse { partial_success: None };
    Ok(if json {
        reply(StatusCode::OK, "application/json", b"{}".to_vec())
    } else {
        reply(StatusCode::OK, "application/x-protobuf", resp.encode_to_vec())
    })
}

async fn serve_grpc(listener: TcpListener, out: Arc<Out>, max_request_bytes: usize) {
    let svc = TraceServiceServer::new(Grpc { out })
        .max_decoding_message_size(max_request_bytes)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("otlp-sink: grpc accept: {e}");
                continue;
            }
        };
        let svc = TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new()).http2_only();
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                eprintln!("otlp-sink: grpc connection: {e}");
            }
        });
    }
}

async fn serve_http(listener: TcpListener, out: Arc<Out>, max_request_bytes: usize) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("otlp-sink: http accept: {e}");
                continue;
            }
        };
        let out = out.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| http_handler(out.clone(), max_request_bytes, req));
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                eprintln!("otlp-sink: http connection: {e}");
            }
        });
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("open {}", args.out.display()))?;
    let out = Arc::new(Out { file: Mutex::new(file) });
    let grpc = TcpListener::bind(args.grpc).await.with_context(|| format!("bind {}", args.grpc))?;
    let http = TcpListener::bind(args.http).await.with_context(|| format!("bind {}", args.http))?;
    let line = serde_json::json!({
        "grpc": grpc.local_addr()?.to_string(),
        "http": http.local_addr()?.to_string(),
    });
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    tokio::spawn(serve_grpc(grpc, out.clone(), args.max_request_bytes));
    tokio::spawn(serve_http(http, out.clone(), args.max_request_bytes));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
