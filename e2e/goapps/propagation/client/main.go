// client sends, in rounds, the requests an outgoing-traceparent test needs over one keep-alive
// connection: a GET, a POST with a 20 KB body, a GET with a 6 KB header and a GET that already
// carries a traceparent (it must arrive with that one only). It prints one JSON line per
// request with what the server received, so a test can compare it with the client spans.
//
// It waits for -start-file to exist before the first round (so a tracer can attach first),
// then runs -rounds rounds (0 = until killed) every -interval. With -warm it first runs one round
// (round 0) before waiting, so the keep-alive connection was opened before the tracer attached.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Preset is the traceparent of the request that brings its own.
const Preset = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

type result struct {
	Worker       int      `json:"worker"`
	Round        int      `json:"round"`
	Name         string   `json:"name"`
	Status       int      `json:"status"`
	Reused       bool     `json:"reused"`
	Error        string   `json:"error,omitempty"`
	Traceparent  []string `json:"traceparent"`
	BodyLen      int      `json:"body_len"`
	BodyIntact   bool     `json:"body_intact"`
	BigHeaderLen int      `json:"big_header_len"`
}

func main() {
	server := flag.String("server", "http://127.0.0.1:39101", "server base URL")
	rounds := flag.Int("rounds", 1, "rounds of requests, 0 = forever")
	interval := flag.Duration("interval", 200*time.Millisecond, "pause between rounds")
	startFile := flag.String("start-file", "", "wait until this file exists before the first round")
	warm := flag.Bool("warm", false, "run round 0 before waiting for -start-file")
	workers := flag.Int("workers", 1, "goroutines running the rounds at once, each with its own connection")
	flag.Parse()
	body := bytes.Repeat([]byte("0123456789abcdef"), 20*1024/16)
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	out := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(worker int) {
			defer wg.Done()
			// One Transport per worker: its own keep-alive connection.
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
			run(client, worker, *server, *rounds, *warm, *interval, *startFile, body, want, func(r result) {
				mu.Lock()
				_ = out.Encode(r)
				mu.Unlock()
			})
		}(w)
	}
	wg.Wait()
}

func run(client *http.Client, worker int, server string, rounds int, warm bool, interval time.Duration, startFile string, body []byte, want string, emit func(result)) {
	first := 1
	if warm {
		first = 0
	}
	for round := first; rounds == 0 || round <= rounds; round++ {
		for round == 1 && startFile != "" {
			if _, err := os.Stat(startFile); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		type req struct {
			name   string
			method string
			path   string
			body   []byte
			header map[string]string
		}
		reqs := []req{
			{"get", "GET", "/get", nil, nil},
			{"post20k", "POST", "/post", body, nil},
			{"bigheader", "GET", "/big", nil, map[string]string{"X-Big": strings.Repeat("b", 6*1024)}},
			{"preset", "GET", "/preset", nil, map[string]string{"Traceparent": Preset}},
		}
		for _, rq := range reqs {
			res := result{Worker: worker, Round: round, Name: rq.name}
			var rd io.Reader
			if rq.body != nil {
				rd = bytes.NewReader(rq.body)
			}
			r, err := http.NewRequest(rq.method, server+rq.path, rd)
			if err != nil {
				log.Fatal(err)
			}
			r.Header.Set("X-Round", strconv.Itoa(round))
			for k, v := range rq.header {
				r.Header.Set(k, v)
			}
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { res.Reused = i.Reused }}
			r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
			resp, err := client.Do(r)
			if err != nil {
				res.Error = err.Error()
			} else {
				var got struct {
					Traceparent  []string `json:"traceparent"`
					BodyLen      int      `json:"body_len"`
					BodySHA256   string   `json:"body_sha256"`
					BigHeaderLen int      `json:"big_header_len"`
				}
				err = json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				res.Status = resp.StatusCode
				if err != nil {
					res.Error = fmt.Sprintf("bad answer: %v", err)
				}
				res.Traceparent = got.Traceparent
				res.BodyLen = got.BodyLen
				res.BodyIntact = rq.body == nil && got.BodyLen == 0 || got.BodySHA256 == want
				res.BigHeaderLen = got.BigHeaderLen
			}
			emit(res)
		}
		time.Sleep(interval)
	}
}
