// httpsvc is one of two small HTTP services for gotel's HTTP tests: a frontend that serves
// /order and calls the backend's /price, with traced functions in between and a goroutine
// spawned from a traced call. With -tls-cert/-tls-key it serves HTTP/1.1 over TLS (a client
// trusts the certificate through SSL_CERT_FILE).
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
)

var backend string

//go:noinline
func order(item string) (int, error) {
	done := make(chan int)
	go func() { done <- audit(item) }()
	p, err := fetchPrice(item)
	<-done
	return p * 2, err
}

//go:noinline
func audit(item string) int { return len(item) }

//go:noinline
func fetchPrice(item string) (int, error) {
	resp, err := http.Get(backend + "/price?item=" + item)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, errors.New("no price for " + item)
	}
	return strconv.Atoi(string(b))
}

//go:noinline
func price(item string) int {
	switch item {
	case "gold":
		return 100
	case "tea":
		return 7
	}
	return -1
}

func main() {
	role := flag.String("role", "frontend", "frontend or backend")
	listen := flag.String("listen", "127.0.0.1:0", "address")
	flag.StringVar(&backend, "backend", "", "backend base URL")
	portfile := flag.String("portfile", "", "write the listening address here")
	tlsCert := flag.String("tls-cert", "", "serve HTTP/1.1 over TLS with this certificate (PEM) and -tls-key")
	tlsKey := flag.String("tls-key", "", "the certificate's key (PEM)")
	flag.Parse()
	mux := http.NewServeMux()
	if *role == "backend" {
		mux.HandleFunc("/price", func(w http.ResponseWriter, r *http.Request) {
			p := price(r.URL.Query().Get("item"))
			if p < 0 {
				http.Error(w, "unknown item", 404)
				return
			}
			fmt.Fprint(w, p)
		})
		// A handler that panics: net/http recovers it and closes the connection, and the
		// goroutine's g is free for the next connection's (e2e: a panicked request leaves no
		// context behind).
		mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
			panic("httpsvc: /panic")
		})
	} else {
		mux.HandleFunc("/order", func(w http.ResponseWriter, r *http.Request) {
			total, err := order(r.URL.Query().Get("item"))
			if err != nil {
				http.Error(w, err.Error(), 502)
				return
			}
			fmt.Fprint(w, total)
		})
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *portfile != "" {
		os.WriteFile(*portfile+".tmp", []byte(ln.Addr().String()), 0o644)
		os.Rename(*portfile+".tmp", *portfile)
	}
	if *tlsCert != "" {
		// HTTP/1.1 only: a non-nil empty TLSNextProto turns off HTTP/2 (ALPN h2).
		srv := &http.Server{Handler: mux, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
		log.Fatal(srv.ServeTLS(ln, *tlsCert, *tlsKey))
	}
	log.Fatal(http.Serve(ln, mux))
}
