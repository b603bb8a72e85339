// Command attrs exercises every kind of value gotel can capture as a span attribute:
// integers of every size, bool, uintptr, strings, []byte, len() of strings/slices/maps,
// pointers, structs in registers and on the stack, methods with pointer and value receivers,
// functions with more arguments than registers, named types, interfaces and errors.
//
// Every traced function is //go:noinline so it exists out of line with its own DWARF entry.
// main calls each of them with known values and prints the results so the e2e test can
// compare the span attributes with what the program really passed and returned.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

type UserID int64

type Name string

type Customer struct {
	ID   UserID
	Name Name
	VIP  bool
	Addr *Address
}

type Address struct {
	City string
	Zip  uint16
}

type Order struct {
	ID       int64
	Customer *Customer
	Items    []string
	Tags     map[string]int
	Note     string
	Total    int32
	Flags    uint8
}

// Point is small enough to be decomposed into registers.
type Point struct {
	X, Y int32
	Name string
}

// Grid contains an array of length > 1: always passed on the stack.
type Grid struct {
	Cells [3]int64
	Label string
}

type Store struct {
	name  string
	items map[string]string
	hits  int
}

type Counter struct {
	N    int
	Name string
}

//go:noinline
func Ints(a int, b int8, c int16, d int32, e int64) int64 {
	return int64(a) + int64(b) + int64(c) + int64(d) + e
}

//go:noinline
func Uints(a uint, b uint8, c uint16, d uint32, e uint64, p uintptr) uint64 {
	return uint64(a) + uint64(b) + uint64(c) + uint64(d) + e + uint64(p)
}

//go:noinline
func Bools(a bool, b bool) bool { return a && !b }

//go:noinline
func Strings(s string, b []byte) (string, int) {
	return s + string(b), len(s) + len(b)
}

//go:noinline
func Lens(s string, xs []int, m map[string]int) int { return len(s) + len(xs) + len(m) }

//go:noinline
func Named(id UserID, n Name) (UserID, Name) { return id + 1, n + "!" }

//go:noinline
func ProcessOrder(o *Order) (int64, error) {
	if o.Total < 0 {
		return 0, errors.New("negative total")
	}
	return o.ID, nil
}

//go:noinline
func Charge(cents int64, currency string) error {
	if cents > 100000 {
		return fmt.Errorf("charge %d %s: %w", cents, currency, errLimit)
	}
	return nil
}

var errLimit = errors.New("over the limit")

//go:noinline
func Many(a, b, c, d, e, f, g, h, i, j, k, l int) int {
	return a + b + c + d + e + f + g + h + i + j + k + l
}

//go:noinline
func MixedMany(a string, b int, c string, d string, e int, f string, g int8) (string, int) {
	return a + c + d + f, b + e + int(g)
}

//go:noinline
func StructArg(p Point, q Point) int32 { return p.X + q.Y }

//go:noinline
func GridArg(n int, g Grid, m int) int64 { return int64(n+m) + g.Cells[1] }

//go:noinline
func Floats(x float64, n int, y float32) int { return int(x) + n + int(y) }

//go:noinline
func Iface(v any, s fmt.Stringer) string {
	if s == nil {
		return fmt.Sprint(v)
	}
	return fmt.Sprint(v) + s.String()
}

//go:noinline
func Fail(code int) (result string, err error) {
	switch code {
	case 0:
		return "ok", nil
	case 1:
		return "", errors.New("plain failure")
	case 2:
		return "", fmt.Errorf("wrapped: %w", errLimit)
	default:
		return "", &CodeError{Code: code}
	}
}

type CodeError struct{ Code int }

func (e *CodeError) Error() string { return "code " + strconv.Itoa(e.Code) }

//go:noinline
func (s *Store) Get(key string) (string, bool) {
	s.hits++
	v, ok := s.items[key]
	return v, ok
}

//go:noinline
func (c Counter) Value(extra int) int { return c.N + extra }

func (c Counter) String() string { return c.Name }

//go:noinline
func Ptrs(p *int, c *Customer) int {
	if p == nil {
		return 0
	}
	return *p
}

//go:noinline
func ManyResults(n int) (a, b, c, d, e, f, g, h, i, j int) {
	return n, n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7, n + 8, n + 9
}

// double is only ever inlined: DWARF knows it as an abstract function without code.
func double(x int) int { return x * 2 }

// Small is inlined into main and also called through a func value, so it has both an
// abstract DWARF entry and a concrete out-of-line one that refers to it.
func Small(a int, s string) int { return a + len(s) }

var smallFn = Small

// Embedded promotes Base's fields.
type Base struct{ Kind string }

type Derived struct {
	Base
	Size int
}

//go:noinline
func Promoted(d *Derived, v Derived) string { return d.Kind + v.Kind }

//go:noinline
func Blank(_ int, x string, _ bool) (int, error) { return len(x), nil }

// Stack is generic: its shaped instantiation takes a hidden dictionary argument first.
type Stack[T any] struct{ items []T }

//go:noinline
func (s *Stack[T]) Push(v T, label string) int {
	s.items = append(s.items, v)
	return len(s.items)
}

//go:noinline
func Empty(x struct{}, n int) int { return n }

func main() {
	n := 1
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	cust := &Customer{ID: 42, Name: "Ada", VIP: true, Addr: &Address{City: "Paris", Zip: 7501}}
	order := &Order{ID: 1001, Customer: cust, Items: []string{"a", "b", "c"},
		Tags: map[string]int{"x": 1, "y": 2}, Note: "fragile", Total: 250, Flags: 3}
	store := &Store{name: "main", items: map[string]string{"k": "v"}}
	for i := 0; i < n; i++ {
		fmt.Println(Ints(-1, -2, -3, -4, -5))
		fmt.Println(Uints(1, 200, 60000, 4000000000, 1<<63, 0xdead))
		fmt.Println(Bools(true, false))
		fmt.Println(Strings("hello", []byte("world")))
		fmt.Println(Lens("abc", []int{1, 2}, map[string]int{"a": 1}))
		fmt.Println(Named(7, "bob"))
		fmt.Println(ProcessOrder(order))
		fmt.Println(Charge(500, "EUR"), Charge(200000, "USD"))
		fmt.Println(Many(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12))
		fmt.Println(MixedMany("s1", 2, "s3", "s4", 5, "s6", 7))
		fmt.Println(StructArg(Point{1, 2, "p"}, Point{3, 4, "q"}))
		fmt.Println(GridArg(1, Grid{Cells: [3]int64{4, 5, 6}, Label: "g"}, 2))
		fmt.Println(Floats(1.5, 2, 3.5))
		fmt.Println(Iface(42, Counter{N: 1, Name: "ctr"}))
		for code := 0; code < 4; code++ {
			fmt.Println(Fail(code))
		}
		fmt.Println(store.Get("k"))
		fmt.Println(Counter{N: 5, Name: "c"}.Value(3))
		x := 9
		fmt.Println(Ptrs(&x, cust))
		fmt.Println(ManyResults(1))
		fmt.Println(Empty(struct{}{}, 3))
		fmt.Println(Blank(1, "blank", true))
		st := &Stack[string]{}
		fmt.Println(st.Push("first", "lbl"))
		fmt.Println(double(n), Small(1, "x"), smallFn(2, "yy"))
		fmt.Println(Promoted(&Derived{Base{"k1"}, 1}, Derived{Base{"k2"}, 2}))
		if n > 1 {
			time.Sleep(100 * time.Millisecond)
		}
	}
}
