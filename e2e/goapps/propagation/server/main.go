// server prints one JSON line per received request (stdout) with what a test of outgoing
// traceparent injection needs to see: every traceparent value received (there must be exactly
// one), the declared and received body length and a checksum of the body, the length of the
// X-Big header, and whether the connection was reused. It answers with the same JSON.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
)

type received struct {
	Method        string   `json:"method"`
	Path          string   `json:"path"`
	Traceparent   []string `json:"traceparent"`
	ContentLength int64    `json:"content_length"`
	BodyLen       int      `json:"body_len"`
	BodySHA256    string   `json:"body_sha256"`
	BigHeaderLen  int      `json:"big_header_len"`
	Remote        string   `json:"remote"`
	Proto         string   `json:"proto"`
	Round         string   `json:"round"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:39101", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", ln.Addr())
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		rec := received{
			Method:        r.Method,
			Path:          r.URL.Path,
			Traceparent:   r.Header.Values("Traceparent"),
			ContentLength: r.ContentLength,
			BodyLen:       len(body),
			BodySHA256:    hex.EncodeToString(sum[:]),
			BigHeaderLen:  len(r.Header.Get("X-Big")),
			Remote:        r.RemoteAddr,
			Proto:         r.Proto,
			Round:         r.Header.Get("X-Round"),
		}
		mu.Lock()
		_ = enc.Encode(rec)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rec)
	})
	log.Fatal(http.Serve(ln, handler))
}
