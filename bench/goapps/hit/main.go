// hit is the client of bench/holdout.py: -n sequential GET requests to -url over one kept-alive
// net/http connection, each with a traceparent header (as traced traffic carries), timed once
// -wait-file exists; prints {"n": N, "ns": ns per request} as JSON. With -batches K it runs K
// batches of -n requests instead, each when a line arrives on stdin, and prints one such line
// per batch (bench/paired.py changes what is attached between batches). The server is a program
// nobody here wrote (Caddy), so the traps gotel adds are in its process, not in this one.
package main

import (
	"bufio"
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
	batches := flag.Int("batches", 0, "batches of -n requests, each started by a line on stdin")
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
	if *batches > 0 {
		in := bufio.NewReader(os.Stdin)
		out := json.NewEncoder(os.Stdout)
		for b := 0; b < *batches; b++ {
			if _, err := in.ReadString('\n'); err != nil {
				os.Exit(0)
			}
			start := time.Now()
			for i := 0; i < *n; i++ {
				get()
			}
			out.Encode(map[string]any{"n": *n, "ns": time.Since(start).Nanoseconds() / int64(*n)})
		}
		return
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
