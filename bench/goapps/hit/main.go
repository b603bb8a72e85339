// hit is the client of bench/holdout.py: -n sequential GET requests to -url over one kept-alive
// net/http connection, each with a traceparent header (as traced traffic carries), timed once
// -wait-file exists; prints {"n": N, "ns": ns per request} as JSON. The server is a program
// nobody here wrote (Caddy), so the traps gotel adds are in its process, not in this one.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	url := flag.String("url", "", "the server's URL")
	n := flag.Int("n", 3000, "timed requests")
	wait := flag.String("wait-file", "", "start timing once this file exists")
	flag.Parse()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	get := func() {
		req, _ := http.NewRequest("GET", *url, nil)
		req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			fmt.Fprintln(os.Stderr, "status", resp.StatusCode)
			os.Exit(1)
		}
	}
	for i := 0; i < 50; i++ { // warm-up: the connection, the server's first-request paths
		get()
	}
	for *wait != "" {
		if _, err := os.Stat(*wait); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	for i := 0; i < *n; i++ {
		get()
	}
	ns := time.Since(start).Nanoseconds() / int64(*n)
	json.NewEncoder(os.Stdout).Encode(map[string]any{"n": *n, "ns": ns})
}
