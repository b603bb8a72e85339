// inventory: the demo's stock keeper, a gRPC service (gotel.demo.Inventory/Lookup, declared by
// hand in internal/inventoryrpc) on :9090 in plaintext HTTP/2. The backend calls it for every
// quote. gotel's built-in grpc.server instrumentation makes the server span; main.findItem is the
// user function the sidecar traces under it (see docker/compose.yaml).
package main

import (
	"context"
	"log"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"gotel.dev/demo/internal/inventoryrpc"
)

type Item = inventoryrpc.Item

var stock = inventoryrpc.Catalog

// findItem looks an item up; unknown names return nil.
//
//go:noinline
func findItem(name string) *Item {
	time.Sleep(2 * time.Millisecond) // a pretend database round trip
	return stock[name]
}

type server struct{}

func (server) Lookup(_ context.Context, name string) (*Item, error) {
	it := findItem(name)
	if it == nil {
		return nil, status.Errorf(codes.NotFound, "unknown item %q", name)
	}
	return it, nil
}

func main() {
	addr := os.Getenv("LISTEN_ADDR")
	if addr == "" {
		addr = ":9090"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&inventoryrpc.Desc, server{})
	log.Printf("inventory listening on %s (gRPC)", addr)
	log.Fatal(srv.Serve(ln))
}
