// HTTP/2 without TLS (h2c, net/http's own support from Go 1.24): one process serves on
// 127.0.0.1 and calls itself, so gotel's HTTP/2 server status path (the bundled
// http2responseWriter up to Go 1.26, net/http/internal/http2 from Go 1.27) is exercised for real.
// Prints one line per request: "path status proto".
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

//go:noinline
func work(item string) int { return len(item) * 100 }

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok/{item}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", work(r.PathValue("item")))
	})
	mux.HandleFunc("GET /fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream broke", http.StatusBadGateway)
	})
	mux.HandleFunc("GET /teapot", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: h2c}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go srv.Serve(ln)
	client := &http.Client{Transport: &http.Transport{Protocols: h2c}}
	base := "http://" + ln.Addr().String()
	for _, path := range []string{"/ok/tea", "/fail", "/teapot", "/ok/coffee"} {
		resp, err := client.Get(base + path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode, resp.Proto)
	}
	srv.Close()
}
