// sink is a minimal OTLP trace receiver for the benchmarks: OTLP/HTTP POST /v1/traces
// (application/x-protobuf, optionally gzip) and OTLP/gRPC TraceService/Export. It counts
// requests, bytes and spans without keeping them, so it costs the machine little while gotel
// or the Go SDK export to it.
//
//	sink -addr 127.0.0.1:0 -grpc-addr 127.0.0.1:0 -port-file FILE
//
// FILE gets "HTTP_PORT GRPC_PORT". GET /count (on the HTTP port) returns
// {"requests":N,"bytes":N,"spans":N} over both transports; POST /reset zeroes the counters.
package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed exports
	"google.golang.org/protobuf/proto"
)

type grpcTraces struct {
	coltrace.UnimplementedTraceServiceServer
}

func (grpcTraces) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	var n int64
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += int64(len(ss.Spans))
		}
	}
	requests.Add(1)
	bodyBytes.Add(int64(proto.Size(req)))
	spans.Add(n)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

var requests, bodyBytes, spans atomic.Int64

// varint reads a protobuf varint.
func varint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad varint")
}

// fields calls fn for every length-delimited field of a protobuf message and skips the rest.
func fields(b []byte, fn func(num uint64, v []byte) error) error {
	for len(b) > 0 {
		key, n, err := varint(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch key & 7 {
		case 0:
			_, n, err = varint(b)
			if err != nil {
				return err
			}
			b = b[n:]
		case 1:
			if len(b) < 8 {
				return errors.New("short fixed64")
			}
			b = b[8:]
		case 5:
			if len(b) < 4 {
				return errors.New("short fixed32")
			}
			b = b[4:]
		case 2:
			l, n, err := varint(b)
			if err != nil {
				return err
			}
			b = b[n:]
			if uint64(len(b)) < l {
				return errors.New("short field")
			}
			if err := fn(key>>3, b[:l]); err != nil {
				return err
			}
			b = b[l:]
		default:
			return fmt.Errorf("wire type %d", key&7)
		}
	}
	return nil
}

// countSpans walks ExportTraceServiceRequest.resource_spans(1).scope_spans(2).spans(2).
func countSpans(body []byte) (int64, error) {
	var n int64
	err := fields(body, func(num uint64, rs []byte) error {
		if num != 1 {
			return nil
		}
		return fields(rs, func(num uint64, ss []byte) error {
			if num != 2 {
				return nil
			}
			return fields(ss, func(num uint64, _ []byte) error {
				if num == 2 {
					n++
				}
				return nil
			})
		})
	})
	return n, err
}

func traces(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		z, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = z
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n, err := countSpans(b)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	requests.Add(1)
	bodyBytes.Add(int64(len(b)))
	spans.Add(n)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:0", "gRPC listen address")
	portFile := flag.String("port-file", "", "write \"HTTP_PORT GRPC_PORT\" here")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
	gln, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	coltrace.RegisterTraceServiceServer(gs, grpcTraces{})
	go gs.Serve(gln)
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", traces)
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{"requests": requests.Load(), "bytes": bodyBytes.Load(), "spans": spans.Load()})
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		requests.Store(0)
		bodyBytes.Store(0)
		spans.Store(0)
	})
	port, gport := ln.Addr().(*net.TCPAddr).Port, gln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", port, gport)), 0o644)
		os.Rename(tmp, *portFile)
	}
	fmt.Printf("http 127.0.0.1:%d grpc 127.0.0.1:%d\n", port, gport)
	http.Serve(ln, mux)
}
