// Command wrappers is the target program of gotel's name and tail-jump tests
// (e2e/tests/names.rs).
//
// (*Ptr).Work is a method promoted from an embedded *Inner: the compiler writes it as a
// wrapper that loads the embedded pointer and ends with `JMP main.(*Inner).Work` (a tail jump,
// no RET), which gotel must pair like a return. (*Mutex).Lock and (*RWMutex).Lock are two
// functions whose names differ only inside the receiver, for the exact-name test.
//
//	wrappers [-n N]
//
// Prints the sum of the work and how many calls each traced function made.
package main

import (
	"flag"
	"fmt"
)

type Worker interface{ Work(n int) int }

type Inner struct{ base int }

//go:noinline
func (i *Inner) Work(n int) int { return i.base + n }

// Ptr promotes Work from its embedded *Inner: (*Ptr).Work is a tail-jump wrapper.
type Ptr struct{ *Inner }

type Mutex struct{ n int }

//go:noinline
func (m *Mutex) Lock() { m.n++ }

type RWMutex struct{ n int }

//go:noinline
func (m *RWMutex) Lock() { m.n += 2 }

// worker hides the concrete type from the compiler, so calls go through the interface and
// reach the wrapper.
//
//go:noinline
func worker(i *Inner) Worker { return &Ptr{i} }

func main() {
	n := flag.Int("n", 100, "calls of each function")
	flag.Parse()
	w := worker(&Inner{base: 1})
	var m Mutex
	var rw RWMutex
	sum := 0
	for k := 0; k < *n; k++ {
		sum += w.Work(k)
		m.Lock()
		rw.Lock()
	}
	fmt.Printf("sum=%d ptr.work=%d mutex.lock=%d rwmutex.lock=%d\n", sum, *n, m.n, rw.n/2)
}
