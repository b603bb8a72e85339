// backend: a small pricing service for the gotel demo.
//
//	GET /price?item=NAME&qty=N  ->  {"item":"NAME","qty":N,"cents":C}
//
// quote and lookupInventory are the functions gotel traces (see docker/compose.yaml); they are
// kept out of line with //go:noinline so they exist as functions in the binary.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"
)

// Item is what the inventory knows about a product.
type Item struct {
	SKU        string
	Name       string
	PriceCents int
	Stock      int
}

var inventory = map[string]*Item{
	"coffee": {SKU: "SKU-100", Name: "coffee", PriceCents: 450, Stock: 1000},
	"tea":    {SKU: "SKU-101", Name: "tea", PriceCents: 320, Stock: 1000},
	"bagel":  {SKU: "SKU-102", Name: "bagel", PriceCents: 275, Stock: 40},
	"muffin": {SKU: "SKU-103", Name: "muffin", PriceCents: 300, Stock: 25},
}

var errUnknownItem = errors.New("unknown item")

// lookupInventory finds an item by name; unknown names return an error.
//
//go:noinline
func lookupInventory(name string) (*Item, error) {
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
	mux := http.NewServeMux()
	mux.HandleFunc("/price", handlePrice)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	log.Printf("backend listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
