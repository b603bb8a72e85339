// frontend: the order service of the gotel demo. It prices each order line by calling the
// backend over HTTP.
//
//	GET /order?customer=NAME&tier=gold&items=coffee,bagel&qty=2  ->  {"id":N,"total_cents":C}
//
// With LOAD_INTERVAL (e.g. "2s") it sends itself a varied order at that interval, so traces appear
// in Jaeger without anyone clicking; "0" turns that off. With LOAD_START=signal those orders
// begin only at SIGUSR1: docker/demo.sh sends it once every gotel sidecar has attached, so that
// no early order is traced by some services and not others (a trace in pieces).
//
// processOrder, validateOrder and fetchPrice are the functions gotel traces (docker/compose.yaml).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Customer is passed by pointer to processOrder; gotel reads customer.Name through it.
type Customer struct {
	Name string
	Tier string
}

// Order is what validateOrder checks.
type Order struct {
	ID       int
	Customer *Customer
	Items    []string
	Qty      int
}

var (
	backendURL = "http://backend:8081"
	client     = &http.Client{Timeout: 5 * time.Second}
	nextID     int64
)

var errEmptyOrder = errors.New("order has no items")

// validateOrder rejects empty orders and silly quantities.
//
//go:noinline
func validateOrder(o *Order) error {
	if len(o.Items) == 0 {
		return errEmptyOrder
	}
	if o.Qty > 100 {
		return fmt.Errorf("order %d: quantity %d over the limit of 100", o.ID, o.Qty)
	}
	return nil
}

// fetchPrice asks the backend what qty units of item cost.
//
//go:noinline
func fetchPrice(item string, qty int) (int, error) {
	resp, err := client.Get(fmt.Sprintf("%s/price?item=%s&qty=%d", backendURL, item, qty))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("backend: %s", strings.TrimSpace(string(body)))
	}
	var out struct {
		Cents int `json:"cents"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, err
	}
	return out.Cents, nil
}

// processOrder validates an order and prices each of its items.
//
//go:noinline
func processOrder(id int, customer *Customer, items []string, qty int) (int, error) {
	o := &Order{ID: id, Customer: customer, Items: items, Qty: qty}
	if err := validateOrder(o); err != nil {
		return 0, err
	}
	total := 0
	for _, item := range items {
		cents, err := fetchPrice(item, qty)
		if err != nil {
			return 0, err
		}
		total += cents
	}
	if customer.Tier == "gold" {
		total = total * 95 / 100
	}
	return total, nil
}

func handleOrder(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("customer")
	if name == "" {
		name = "anonymous"
	}
	var items []string
	for _, it := range strings.Split(q.Get("items"), ",") {
		if it = strings.TrimSpace(it); it != "" {
			items = append(items, it)
		}
	}
	qty, _ := strconv.Atoi(q.Get("qty"))
	if qty <= 0 {
		qty = 1
	}
	id := int(atomic.AddInt64(&nextID, 1))
	total, err := processOrder(id, &Customer{Name: name, Tier: q.Get("tier")}, items, qty)
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"id": id, "error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]interface{}{"id": id, "total_cents": total})
}

// selfLoad sends a varied order to this service every interval: mostly good ones, now and then
// an unknown item (error from the backend) or an empty order (validation error).
func selfLoad(addr string, every time.Duration) {
	customers := []string{"alice", "bob", "carol", "dave"}
	orders := []string{"coffee,bagel", "tea", "coffee,muffin,tea", "bagel", "unicorn", ""}
	port := addr[strings.LastIndex(addr, ":")+1:]
	for i := 0; ; i++ {
		time.Sleep(every)
		u := fmt.Sprintf("http://127.0.0.1:%s/order?customer=%s&tier=%s&items=%s&qty=%d",
			port, customers[i%len(customers)], []string{"gold", "basic"}[i%2], orders[i%len(orders)], 1+i%12)
		resp, err := client.Get(u)
		if err != nil {
			log.Printf("self-load: %v", err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

func main() {
	addr := os.Getenv("LISTEN_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	if u := os.Getenv("BACKEND_URL"); u != "" {
		backendURL = strings.TrimRight(u, "/")
	}
	if s := os.Getenv("LOAD_INTERVAL"); s != "" && s != "0" {
		every, err := time.ParseDuration(s)
		if err != nil {
			log.Fatalf("LOAD_INTERVAL=%q: %v", s, err)
		}
		switch start := os.Getenv("LOAD_START"); start {
		case "", "now":
			go selfLoad(addr, every)
		case "signal":
			// Registered before main goes on: an early SIGUSR1 must not end the process.
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGUSR1)
			go func() {
				log.Printf("self-load: waiting for SIGUSR1 (LOAD_START=signal)")
				<-sig
				signal.Stop(sig)
				log.Printf("self-load: an order every %s", every)
				selfLoad(addr, every)
			}()
		default:
			log.Fatalf("LOAD_START=%q: want now or signal", start)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/order", handleOrder)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	log.Printf("frontend listening on %s, backend %s", addr, backendURL)
	log.Fatal(http.ListenAndServe(addr, mux))
}
