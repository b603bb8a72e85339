// builtins measures what gotel's built-in hooks cost the program: an HTTP request to
// a net/http server, and starting a goroutine. Client and server run in this one process, on one
// CPU (bench/hooks.py pins it), so every trap a request causes is in the time measured.
//
//	builtins -mode http -headers 1|20 [-spawn] [-cookie BYTES] -n N -wait-file F   # ns per request
//	builtins -mode go -n N -wait-file F                             # ns per goroutine start
//
// The timed part starts once -wait-file exists (a probe attached from outside) and prints one
// JSON line. With -batches K it runs K timed batches of -n instead, each when a line arrives on
// stdin, and prints a line per batch (bench/paired.py changes what is attached between them). The client is a raw keep-alive connection (no net/http client, so no client span
// and no goroutine of its own per request). With -spawn the handler answers from a goroutine it
// starts, as gRPC runs each stream in its own goroutine. With -cookie the request ends with a
// Cookie header of that many bytes: a header block larger than the server's 4 KiB read buffer,
// so its first lines (traceparent among them) are gone from the buffer when the handler runs
// and gotel reads them from the request's http.Header map.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

//go:noinline
func unrelated(x int) int { return x * 3 }

func waitFile(path string) {
	for path != "" {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func serve(spawn bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if spawn {
			done := make(chan struct{})
			go func() { io.WriteString(w, "ok"); close(done) }()
			<-done
			return
		}
		io.WriteString(w, "ok")
	})
	go http.Serve(ln, h)
	return ln.Addr().String()
}

func request(addr string, headers, cookie int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "GET /item HTTP/1.1\r\nHost: %s\r\n", addr)
	// Go's client sends User-Agent and Accept-Encoding: with them, "1 header" is the client's
	// default request plus traceparent; 20 adds browser-like lines.
	b.WriteString("User-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n")
	b.WriteString("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n")
	for i := 1; i < headers; i++ {
		fmt.Fprintf(&b, "X-Extra-%02d: value-%d-%s\r\n", i, i, strings.Repeat("v", 20))
	}
	if cookie > 0 {
		fmt.Fprintf(&b, "Cookie: %s\r\n", strings.Repeat("c", cookie))
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// httpOp returns one request and its answer, on a warmed-up connection.
func httpOp(headers, cookie int, spawn bool) func() {
	addr := serve(spawn)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	r := bufio.NewReader(c)
	req := request(addr, headers, cookie)
	one := func() {
		if _, err := c.Write(req); err != nil {
			panic(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for i := 0; i < 200; i++ {
		one()
	}
	return one
}

// timed runs n requests (or, with go, n goroutine starts) and returns ns per operation.
func timed(n int, goStarts bool, one func()) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		if goStarts {
			wg.Add(1)
			go func() { wg.Done() }()
		} else {
			one()
		}
	}
	wg.Wait()
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func main() {
	mode := flag.String("mode", "http", "http or go")
	n := flag.Int("n", 2000, "requests or goroutines")
	headers := flag.Int("headers", 1, "request headers beyond the client's defaults")
	spawn := flag.Bool("spawn", false, "answer from a goroutine started per request")
	cookie := flag.Int("cookie", 0, "bytes of a Cookie header at the end of each request (0: none)")
	wait := flag.String("wait-file", "", "start timing once this file exists")
	batches := flag.Int("batches", 0, "timed batches of -n, each started by a line on stdin")
	flag.Parse()
	goStarts := *mode == "go"
	var one func()
	if !goStarts {
		one = httpOp(*headers, *cookie, *spawn)
	}
	out := json.NewEncoder(os.Stdout)
	if *batches > 0 {
		in := bufio.NewReader(os.Stdin)
		for b := 0; b < *batches; b++ {
			if _, err := in.ReadString('\n'); err != nil {
				return
			}
			out.Encode(map[string]any{"mode": *mode, "n": *n, "ns": timed(*n, goStarts, one)})
		}
		return
	}
	waitFile(*wait)
	if goStarts {
		unrelated(1)
	} else {
		for i := 0; i < 200; i++ {
			one()
		}
	}
	out.Encode(map[string]any{"mode": *mode, "n": *n, "ns": timed(*n, goStarts, one)})
}
