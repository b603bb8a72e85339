// Command hello is the base binary of gotel's binary fuzz targets (fuzz/gen-seeds.sh): small,
// with a method, a struct parameter, an error result and a closure, so its symbol table,
// pclntab, build info and DWARF have a bit of everything.
package main

import (
	"errors"
	"fmt"
	"os"
)

type Order struct {
	ID       int64
	Customer *Customer
	Items    []string
}

type Customer struct{ Name string }

type Store struct{ m map[string]int }

//go:noinline
func (s *Store) Get(key string) (int, error) {
	v, ok := s.m[key]
	if !ok {
		return 0, errors.New("missing " + key)
	}
	return v, nil
}

//go:noinline
func process(o Order, n int) (total int, err error) {
	for _, it := range o.Items {
		total += len(it) * n
	}
	if o.Customer == nil {
		return 0, fmt.Errorf("order %d: %w", o.ID, os.ErrNotExist)
	}
	return total, nil
}

func main() {
	s := &Store{m: map[string]int{"a": 1}}
	v, err := s.Get(os.Args[0])
	f := func(x int) int { return x + v }
	t, err2 := process(Order{ID: 1, Customer: &Customer{"c"}, Items: os.Args}, f(2))
	fmt.Println(v, err, t, err2)
}
