// backend: a small pricing service for the gotel demo.
//
//	GET /price?item=NAME&qty=N  ->  {"item":"NAME","qty":N,"cents":C}
//
// quote and lookupInventory are the functions gotel traces (see docker/compose.yaml); they are
// kept out of line with //go:noinline so they exist as functions in the binary.
//
// With INVENTORY_ADDR set (host:port; the compose demo sets inventory:9090) lookupInventory asks
// the inventory service over gRPC (gotel.demo.Inventory/Lookup), so one request of the backend
// holds an HTTP server span and, under lookupInventory, a gRPC client span. Without it (the
// Kubernetes demo, the compose test's untraced decoy) it reads the same table in memory.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"gotel.dev/demo/internal/inventoryrpc"
)

// Item is what the inventory knows about a product.
type Item = inventoryrpc.Item

// inventoryConn is the connection to the inventory service, nil without INVENTORY_ADDR.
var inventoryConn *grpc.ClientConn

// inventory is the table lookupInventory reads without INVENTORY_ADDR.
var inventory = inventoryrpc.Catalog

var errUnknownItem = errors.New("unknown item")

// lookupInventory finds an item by name; unknown names return an error.
//
//go:noinline
func lookupInventory(name string) (*Item, error) {
	if inventoryConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		it, err := inventoryrpc.Lookup(ctx, inventoryConn, name)
		if status.Code(err) == codes.NotFound {
			return nil, errUnknownItem
		}
		return it, err
	}
	time.Sleep(2 * time.Millisecond) // a pretend database round trip
	it, ok := inventory[name]
	if !ok {
		return nil, errUnknownItem
	}
	return it, nil
}

// quote prices qty units of item, with a 10% discount from 10 units on.
//
//go:noinline
func quote(item string, qty int) (int, error) {
	it, err := lookupInventory(item)
	if err != nil {
		return 0, fmt.Errorf("quote %q: %w", item, err)
	}
	if qty > it.Stock {
		return 0, fmt.Errorf("quote %q: only %d in stock", item, it.Stock)
	}
	cents := it.PriceCents * qty
	if qty >= 10 {
		cents = cents * 9 / 10
	}
	return cents, nil
}

func handlePrice(w http.ResponseWriter, r *http.Request) {
	item := r.URL.Query().Get("item")
	qty, _ := strconv.Atoi(r.URL.Query().Get("qty"))
	if qty <= 0 {
		qty = 1
	}
	cents, err := quote(item, qty)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]interface{}{"item": item, "qty": qty, "cents": cents})
}

func main() {
	addr := os.Getenv("LISTEN_ADDR")
	if addr == "" {
		addr = ":8081"
	}
	if inv := os.Getenv("INVENTORY_ADDR"); inv != "" {
		cc, err := grpc.NewClient(inv, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			log.Fatalf("inventory %s: %v", inv, err)
		}
		inventoryConn = cc
		log.Printf("backend asks the inventory at %s over gRPC", inv)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/price", handlePrice)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	log.Printf("backend listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
