// tpsvc is the pair of services of gotel's trace-context propagation tests (e2e/tests/propagation.rs,
//): a frontend that, on the test's order, calls an echo backend over plaintext HTTP/1.1,
// and the echo backend. Both record every byte that crosses their client/server sockets, so the
// test can prove that a request changed by exactly one inserted `traceparent` line and nothing else:
//
//   - the frontend wraps the connections its Transport dials and keeps everything it WROTE, per
//     connection (key: its local address);
//   - the echo wraps the connections it accepts and keeps everything it READ, per connection (key:
//     the peer's address, which is the frontend's local address).
//
// The bytes are what the Go program handed to / got from the kernel, so the difference between the
// two is exactly what the kernel (gotel's SK_MSG program) changed in between.
//
//	tpsvc -role echo  -portfile F
//	tpsvc -role front -backend http://127.0.0.1:PORT -portfile F
//
// Echo: GET/POST /echo/<id> answers JSON: method, proto, the peer's address, the headers received
// (as parsed by net/http), Content-Length, and the body's length and SHA-256. GET /wire: every
// connection's received bytes, hex. /healthz.
//
// Front: GET /call?id=ID&n=K&method=GET|POST&body=BYTES&hdr=BYTES&tp=VALUE&tpkey=NAME&fresh=1 makes K
// sequential requests to /echo/ID-0 .. /echo/ID-K-1 through one keep-alive client (fresh=1: a new
// Transport, so a new connection) and answers what it sent and what the echo saw, per request.
// GET /load?prefix=P&n=N&c=C: N requests (every 4th a POST with a 1 KiB body) from C goroutines
// through one client, as fast as they go; answers counters (failed requests, requests whose echo saw
// 0, 1 or more traceparent values). GET /wire: every dialed connection's written bytes, hex.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ---------------------------------------------------------------- byte logs

// wireLog keeps the bytes of each connection in one direction.
type wireLog struct {
	mu    sync.Mutex
	conns map[string]*bytes.Buffer
}

func newWireLog() *wireLog { return &wireLog{conns: map[string]*bytes.Buffer{}} }

func (w *wireLog) add(key string, p []byte) {
	if len(p) == 0 {
		return
	}
	w.mu.Lock()
	b := w.conns[key]
	if b == nil {
		b = &bytes.Buffer{}
		w.conns[key] = b
	}
	b.Write(p)
	w.mu.Unlock()
}

func (w *wireLog) serve(rw http.ResponseWriter, r *http.Request) {
	out := map[string]string{}
	w.mu.Lock()
	for k, b := range w.conns {
		out[k] = hex.EncodeToString(b.Bytes())
	}
	w.mu.Unlock()
	writeJSON(rw, out)
}

// recConn records what is written (frontend) or read (echo) on a connection.
type recConn struct {
	net.Conn
	key          string
	log          *wireLog
	reads, write bool
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.reads {
		c.log.add(c.key, p[:n])
	}
	return n, err
}

func (c *recConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.write {
		c.log.add(c.key, p[:n])
	}
	return n, err
}

type recListener struct {
	net.Listener
	log *wireLog
}

func (l recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recConn{Conn: c, key: c.RemoteAddr().String(), log: l.log, reads: true}, nil
}

// ---------------------------------------------------------------- helpers

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// pattern is a deterministic printable body of n bytes for request id.
func pattern(id string, n int) []byte {
	x := uint64(1469598103934665603)
	for i := 0; i < len(id); i++ {
		x = (x ^ uint64(id[i])) * 1099511628211
	}
	b := make([]byte, n)
	for i := range b {
		x = x*6364136223846793005 + 1442695040888963407
		b[i] = 'A' + byte((x>>33)%58)
	}
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ---------------------------------------------------------------- echo

// EchoReply is what the echo saw of one request.
type EchoReply struct {
	ID            string              `json:"id"`
	Method        string              `json:"method"`
	Proto         string              `json:"proto"`
	Remote        string              `json:"remote"`
	Host          string              `json:"host"`
	Headers       map[string][]string `json:"headers"`
	ContentLength int64               `json:"content_length"`
	BodyLen       int                 `json:"body_len"`
	BodySHA256    string              `json:"body_sha256"`
}

// record is the echo's traced function (the backend's "user function" under its server span).
//
//go:noinline
func record(id string, n int) int {
	return n + len(id)
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body: "+err.Error(), 400)
		return
	}
	id := strings.TrimPrefix(r.URL.Path, "/echo/")
	record(id, len(body))
	writeJSON(w, EchoReply{
		ID: id, Method: r.Method, Proto: r.Proto, Remote: r.RemoteAddr, Host: r.Host,
		Headers: r.Header, ContentLength: r.ContentLength, BodyLen: len(body), BodySHA256: sum(body),
	})
}

// ---------------------------------------------------------------- front

var (
	backend string
	sent    = newWireLog()
	// keep is the keep-alive client most calls go through.
	keep = newClient()
)

func newClient() *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &recConn{Conn: c, key: c.LocalAddr().String(), log: sent, write: true}, nil
		},
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     10 * time.Minute,
	}
	return &http.Client{Transport: t, Timeout: 60 * time.Second}
}

// forward is the frontend's traced function: the CLIENT span of the request is its child.
//
//go:noinline
func forward(c *http.Client, req *http.Request, id string) (*http.Response, error) {
	return c.Do(req)
}

// Sent is one request as the frontend made it, and what the echo saw of it.
type Sent struct {
	ID         string     `json:"id"`
	Status     int        `json:"status"`
	Reused     bool       `json:"reused"`
	Local      string     `json:"local"`
	BodyLen    int        `json:"body_len"`
	BodySHA256 string     `json:"body_sha256"`
	Echo       *EchoReply `json:"echo"`
	Err        string     `json:"err,omitempty"`
}

type callOpts struct {
	method, tp, tpkey string
	body, hdr         int
}

func call(c *http.Client, id string, o callOpts) Sent {
	s := Sent{ID: id}
	var body []byte
	if o.body > 0 {
		body = pattern(id, o.body)
	}
	s.BodyLen, s.BodySHA256 = len(body), sum(body)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(o.method, backend+"/echo/"+id, rd)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	req.Header.Set("X-Request-Id", id)
	if o.hdr > 0 {
		req.Header.Set("X-Big", string(pattern("hdr"+id, o.hdr)))
	}
	if o.tp != "" {
		// Verbatim key: "traceparent" is sent lower-case, "Traceparent" canonical.
		req.Header[o.tpkey] = []string{o.tp}
	}
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		s.Reused, s.Local = i.Reused, i.Conn.LocalAddr().String()
	}}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := forward(c, req, id)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	defer resp.Body.Close()
	s.Status = resp.StatusCode
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.Err = "read reply: " + err.Error()
		return s
	}
	var e EchoReply
	if err := json.Unmarshal(b, &e); err != nil {
		s.Err = fmt.Sprintf("echo reply %q: %v", b, err)
		return s
	}
	s.Echo = &e
	if e.BodyLen != s.BodyLen || e.BodySHA256 != s.BodySHA256 {
		s.Err = fmt.Sprintf("body changed: sent %d bytes %s, echo got %d bytes %s", s.BodyLen, s.BodySHA256, e.BodyLen, e.BodySHA256)
	}
	return s
}

func atoi(r *http.Request, k string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(k)); err == nil {
		return v
	}
	return def
}

func handleCall(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := callOpts{method: q.Get("method"), tp: q.Get("tp"), tpkey: q.Get("tpkey"), body: atoi(r, "body", 0), hdr: atoi(r, "hdr", 0)}
	if o.method == "" {
		o.method = "GET"
	}
	if o.tpkey == "" {
		o.tpkey = "Traceparent"
	}
	c := keep
	if q.Get("fresh") == "1" {
		c = newClient()
	}
	out := []Sent{}
	for i := 0; i < atoi(r, "n", 1); i++ {
		out = append(out, call(c, fmt.Sprintf("%s-%d", q.Get("id"), i), o))
	}
	writeJSON(w, out)
}

// LoadResult counts what a load run saw.
type LoadResult struct {
	N       int      `json:"n"`
	OK      int64    `json:"ok"`
	Failed  int64    `json:"failed"`
	TP0     int64    `json:"tp0"`
	TP1     int64    `json:"tp1"`
	TPMany  int64    `json:"tp_many"`
	Seconds float64  `json:"seconds"`
	Errors  []string `json:"errors"`
}

func handleLoad(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	n, workers := atoi(r, "n", 1000), atoi(r, "c", 8)
	res := LoadResult{N: n}
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for k := 0; k < workers; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				o := callOpts{method: "GET"}
				if i%4 == 0 {
					o = callOpts{method: "POST", body: 1024}
				}
				s := call(keep, fmt.Sprintf("%s-%d", prefix, i), o)
				if s.Err == "" && s.Status != 200 {
					s.Err = fmt.Sprintf("status %d", s.Status)
				}
				mu.Lock()
				if s.Err != "" {
					res.Failed++
					if len(res.Errors) < 10 {
						res.Errors = append(res.Errors, s.ID+": "+s.Err)
					}
				} else {
					res.OK++
				}
				if s.Echo != nil {
					switch len(s.Echo.Headers["Traceparent"]) {
					case 0:
						res.TP0++
					case 1:
						res.TP1++
					default:
						res.TPMany++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	writeJSON(w, res)
}

// ---------------------------------------------------------------- main

func main() {
	role := flag.String("role", "front", "front or echo")
	listen := flag.String("listen", "127.0.0.1:0", "address")
	flag.StringVar(&backend, "backend", "", "echo base URL (front)")
	portfile := flag.String("portfile", "", "write the listening address here")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	switch *role {
	case "echo":
		received := newWireLog()
		mux.HandleFunc("/echo/", echo)
		mux.HandleFunc("/wire", received.serve)
		ln = recListener{Listener: ln, log: received}
	case "front":
		if backend == "" {
			log.Fatal("-backend is required")
		}
		mux.HandleFunc("/call", handleCall)
		mux.HandleFunc("/load", handleLoad)
		mux.HandleFunc("/wire", sent.serve)
	default:
		log.Fatal("unknown role " + *role)
	}
	if *portfile != "" {
		os.WriteFile(*portfile+".tmp", []byte(ln.Addr().String()), 0o644)
		os.Rename(*portfile+".tmp", *portfile)
	}
	err = http.Serve(ln, mux)
	if !errors.Is(err, net.ErrClosed) {
		log.Fatal(err)
	}
}
