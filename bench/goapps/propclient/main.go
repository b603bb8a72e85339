// propclient is the pair of programs of the propagation benchmark (bench/propagation.py):
// the traced HTTP client whose cost is measured with GOTEL_PROPAGATION=inject on and off, and the
// untraced server it calls.
//
//	propclient -role server -port-file F           GET /item answers 64 bytes; GET /stats: counters
//	propclient -role client -url URL -c 8 -d 4s -warmup 1s [-wait-file F]
//
// The client waits for -wait-file (gotel's ready file) when given, warms up (connections, GC
// pacing), then runs C goroutines, each sending GET requests back to back over its own kept-alive
// connection for D, and prints one JSON line: requests, errors, requests/s and latency percentiles.
// The server counts the requests that arrived with 0, 1 or more `traceparent` values, so the
// benchmark can show that injection really happened in the "on" runs and never in the "off" ones.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

var tp0, tp1, tpMany atomic.Int64

func server(portFile string) {
	body := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n")
	mux := http.NewServeMux()
	mux.HandleFunc("/item", func(w http.ResponseWriter, r *http.Request) {
		switch len(r.Header["Traceparent"]) {
		case 0:
			tp0.Add(1)
		case 1:
			tp1.Add(1)
		default:
			tpMany.Add(1)
		}
		w.Write(body)
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]int64{"tp0": tp0.Load(), "tp1": tp1.Load(), "tp_many": tpMany.Load()})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	os.WriteFile(portFile+".tmp", []byte(fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)), 0o644)
	os.Rename(portFile+".tmp", portFile)
	log.Fatal(http.Serve(ln, mux))
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

// run sends requests from c goroutines for d; returns the latencies and the error count.
func run(url string, c int, d time.Duration) ([]time.Duration, int64) {
	var errs atomic.Int64
	lat := make([][]time.Duration, c)
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// One connection per goroutine, kept alive.
			cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second}
			for time.Now().Before(stop) {
				t := time.Now()
				if err := get(cl, url); err != nil {
					errs.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(t))
			}
		}(i)
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return all, errs.Load()
}

func client(url string, c int, d, warmup time.Duration, waitFile string) {
	if waitFile != "" {
		for {
			if _, err := os.Stat(waitFile); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	run(url, c, warmup)
	start := time.Now()
	lat, errs := run(url, c, d)
	secs := time.Since(start).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e6
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"requests": len(lat), "errors": errs, "seconds": secs, "rps": float64(len(lat)) / secs,
		"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1),
	})
}

func main() {
	role := flag.String("role", "client", "client or server")
	portFile := flag.String("port-file", "", "server: write the port here")
	url := flag.String("url", "", "client: URL to GET")
	c := flag.Int("c", 8, "client: concurrent connections")
	d := flag.Duration("d", 4*time.Second, "client: measured duration")
	warmup := flag.Duration("warmup", time.Second, "client: unmeasured warm-up")
	waitFile := flag.String("wait-file", "", "client: start once this file exists")
	flag.Parse()
	if *role == "server" {
		server(*portFile)
		return
	}
	client(*url, *c, *d, *warmup, *waitFile)
}
