// serve is the "real service" of the benchmarks: a net/http server whose handler calls 1, 5 or
// 20 small functions per request (GET /r1, /r5, /r20). bench/run.sh loads it with wrk on
// loopback three ways: untraced; traced by gotel (GOTEL_PROBES=main.step01;...;main.step20
// plus gotel's built-in HTTP server span); and traced by hand with the OpenTelemetry Go SDK
// (-sdk: otelhttp server span plus one manual span per step function, batch-exported over
// OTLP/HTTP to the same receiver, OTEL_EXPORTER_OTLP_ENDPOINT).
package main

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

var (
	useSDK bool
	tracer trace.Tracer
	buf    = []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
)

// body is the work of one step: a hash over 64 bytes, a fraction of a microsecond.
func body(ctx context.Context, name string, req int) uint32 {
	if useSDK {
		var span trace.Span
		_, span = tracer.Start(ctx, name)
		defer span.End()
	}
	h := fnv.New32a()
	h.Write(buf)
	h.Write([]byte{byte(req)})
	return h.Sum32()
}

//go:noinline
func step01(ctx context.Context, req int) uint32 { return body(ctx, "main.step01", req) }

//go:noinline
func step02(ctx context.Context, req int) uint32 { return body(ctx, "main.step02", req) }

//go:noinline
func step03(ctx context.Context, req int) uint32 { return body(ctx, "main.step03", req) }

//go:noinline
func step04(ctx context.Context, req int) uint32 { return body(ctx, "main.step04", req) }

//go:noinline
func step05(ctx context.Context, req int) uint32 { return body(ctx, "main.step05", req) }

//go:noinline
func step06(ctx context.Context, req int) uint32 { return body(ctx, "main.step06", req) }

//go:noinline
func step07(ctx context.Context, req int) uint32 { return body(ctx, "main.step07", req) }

//go:noinline
func step08(ctx context.Context, req int) uint32 { return body(ctx, "main.step08", req) }

//go:noinline
func step09(ctx context.Context, req int) uint32 { return body(ctx, "main.step09", req) }

//go:noinline
func step10(ctx context.Context, req int) uint32 { return body(ctx, "main.step10", req) }

//go:noinline
func step11(ctx context.Context, req int) uint32 { return body(ctx, "main.step11", req) }

//go:noinline
func step12(ctx context.Context, req int) uint32 { return body(ctx, "main.step12", req) }

//go:noinline
func step13(ctx context.Context, req int) uint32 { return body(ctx, "main.step13", req) }

//go:noinline
func step14(ctx context.Context, req int) uint32 { return body(ctx, "main.step14", req) }

//go:noinline
func step15(ctx context.Context, req int) uint32 { return body(ctx, "main.step15", req) }

//go:noinline
func step16(ctx context.Context, req int) uint32 { return body(ctx, "main.step16", req) }

//go:noinline
func step17(ctx context.Context, req int) uint32 { return body(ctx, "main.step17", req) }

//go:noinline
func step18(ctx context.Context, req int) uint32 { return body(ctx, "main.step18", req) }

//go:noinline
func step19(ctx context.Context, req int) uint32 { return body(ctx, "main.step19", req) }

//go:noinline
func step20(ctx context.Context, req int) uint32 { return body(ctx, "main.step20", req) }

var steps = []func(context.Context, int) uint32{
	step01, step02, step03, step04, step05, step06, step07, step08, step09, step10,
	step11, step12, step13, step14, step15, step16, step17, step18, step19, step20,
}

var served int

func handler(n int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		var sum uint32
		for i := 0; i < n; i++ {
			sum += steps[i](ctx, i)
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(strconv.AppendUint([]byte("ok "), uint64(sum), 10))
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	portFile := flag.String("port-file", "", "write the chosen port here")
	flag.BoolVar(&useSDK, "sdk", false, "trace with the OpenTelemetry Go SDK (otelhttp + manual spans)")
	flag.Parse()

	var shutdown func(context.Context) error
	if useSDK {
		exp, err := otlptracehttp.New(context.Background()) // OTEL_EXPORTER_OTLP_ENDPOINT
		if err != nil {
			fmt.Fprintln(os.Stderr, "serve: exporter:", err)
			os.Exit(1)
		}
		res := resource.NewSchemaless(semconv.ServiceName("serve"))
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		otel.SetTracerProvider(tp)
		tracer = tp.Tracer("serve")
		shutdown = tp.Shutdown
	}

	mux := http.NewServeMux()
	for _, n := range []int{1, 5, 20} {
		mux.Handle(fmt.Sprintf("GET /r%d", n), handler(n))
	}
	var h http.Handler = mux
	if useSDK {
		h = otelhttp.NewHandler(mux, "serve")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: h}
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", ln.Addr().(*net.TCPAddr).Port)), 0o644)
		os.Rename(tmp, *portFile)
	}
	srv.Serve(ln)
	if shutdown != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown(ctx)
	}
}
