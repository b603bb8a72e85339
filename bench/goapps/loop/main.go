// loop calls one small function in a tight loop and prints the mean time per call.
//
// It is the target of the per-call cost benchmark (bench/run.sh): the same binary runs with no
// probe, under a bare bpftrace uprobe (entry only, entry + every RET) and under gotel with 0, 2
// and 8 attributes on main.work. The timed loop starts only after -wait-file exists (when a
// probe is attached from outside) and the result is one JSON line on stdout.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

type Customer struct {
	ID   int64
	Name string
}

type Item struct {
	SKU string
	Qty int
}

type Order struct {
	ID       int64
	Note     string
	Customer *Customer
	Items    []Item
}

var sink int64

// work is the traced function: small, no error result (so gotel adds no implicit error slot),
// enough parameters for eight attributes (ints, strings, a bool, a slice length, a field path
// through a pointer).
//
//go:noinline
func work(id int64, name string, o *Order, qty int, urgent bool, tag string, items []Item) int64 {
	r := id + int64(qty) + int64(len(name)) + int64(len(tag)) + int64(len(items))
	if urgent {
		r++
	}
	if o != nil {
		r += o.ID
	}
	return r
}

func main() {
	n := flag.Int("n", 200000, "calls to make")
	waitFile := flag.String("wait-file", "", "wait for this file before the timed loop")
	label := flag.String("label", "", "label echoed in the result line")
	flag.Parse()

	if *waitFile != "" {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, err := os.Stat(*waitFile); err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintln(os.Stderr, "loop: timed out waiting for", *waitFile)
				os.Exit(2)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	items := []Item{{"a-1", 1}, {"b-2", 2}, {"c-3", 3}}
	o := &Order{ID: 42, Note: "leave at the door", Customer: &Customer{ID: 7, Name: "Ada Lovelace"}, Items: items}
	name, tag := "order-service", "priority"

	start := time.Now()
	for i := 0; i < *n; i++ {
		sink += work(int64(i), name, o, i&7, i&1 == 0, tag, items)
	}
	el := time.Since(start)
	out, _ := json.Marshal(map[string]any{
		"label":       *label,
		"calls":       *n,
		"ns_total":    el.Nanoseconds(),
		"ns_per_call": float64(el.Nanoseconds()) / float64(*n),
	})
	fmt.Println(string(out))
	if sink == 1 {
		fmt.Fprintln(os.Stderr, "unlikely")
	}
}
