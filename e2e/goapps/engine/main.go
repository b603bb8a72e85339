// Command engine is the target program of gotel's engine tests (e2e/tests/engine.rs).
//
// It calls a set of //go:noinline functions in ways that are hard for a uprobe tracer:
// concurrent goroutines, nesting (top -> middle -> leaf / (*Store).Get), several RET paths,
// stack growth while a traced frame is live (grow; deep, whose own prologue calls morestack),
// the GC shrinking a stack below a live traced frame (shrinker), panic then recover in a traced
// caller (guard -> safeCall -> mayPanic -> explode) and in an untraced one (catcher -> catch ->
// thrower, then sibling), runtime.Goexit inside a traced call (quitter, whose g's are reused
// later), goroutines spawned from a traced call (fanout -> child), 200 goroutines inside one
// traced call at once (blocker), calls in progress while a tracer attaches by pid (inflight),
// and a call that is the very first statement of main (first).
//
// Everything it prints on stdout is computed from the work and is the same with and without
// tracing. With -expect FILE it also writes, as JSON, how many calls of each traced function
// returned normally (the spans a tracer must produce) and which parents each may have.
//
//	engine [-workers N] [-iters N] [-depth N] [-deep N] [-guards N] [-quitters N] [-fanout N]
//	       [-catch N] [-blockers N] [-inflight N] [-unwind-calls] [-exit CODE]
//	       [-wait-file PATH] [-expect PATH]
//
// With -wait-file the program calls first(), starts the inflight goroutines, prints
// "engine: waiting" on stderr, and then waits (at most 120 s) until PATH exists before doing the
// work, so a tracer can attach to its pid. ENGINE_TIMING=1 prints each phase's duration on stderr.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Calls that returned normally, per traced function.
var (
	cFirst, cTop, cMiddle, cLeaf, cGet, cGrow, cBottom, cDeep                      atomic.Int64
	cGuard, cSafeCall, cMayPanic, cExplode, cAfterPanic, cQuitter, cFanout, cChild atomic.Int64
	cOnUnwind, cThrower, cSibling, cCatcher, cShrinker, cAfterShrink, cBlocker     atomic.Int64
	// Calls that never returned (unwound by panic or Goexit).
	uMayPanic, uExplode, uQuitter, uThrower atomic.Int64
	// Calls in progress when -wait-file was released (entered before a tracer attached by pid).
	cInflight, cAfterAttach, cPostInflight atomic.Int64
)

//go:noinline
func first(x int) int {
	if x < 0 {
		cFirst.Add(1)
		return 0
	}
	cFirst.Add(1)
	return x*x + 1
}

// ---- nesting, early returns, several RETs, a pointer-receiver method ----

type Store struct {
	mu sync.Mutex
	m  map[int]int
}

//go:noinline
func (s *Store) Get(k int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	if !ok {
		cGet.Add(1)
		return -1
	}
	cGet.Add(1)
	return v
}

var store = &Store{m: map[int]int{}}

// unwindCalls (-unwind-calls) makes safeCall's deferred recover call the traced onUnwind.
var unwindCalls bool

//go:noinline
func leaf(x int) int {
	switch x % 4 {
	case 0:
		cLeaf.Add(1)
		return x * 2
	case 1:
		cLeaf.Add(1)
		return x + 7
	case 2:
		if x > 1000 {
			cLeaf.Add(1)
			return x - 1000
		}
	}
	cLeaf.Add(1)
	return -x
}

//go:noinline
func middle(x int) int {
	if x%5 == 0 {
		// Early return: no children.
		cMiddle.Add(1)
		return x
	}
	v := leaf(x)
	if x%2 == 0 {
		runtime.Gosched() // let the goroutine move between threads
	}
	if x%3 == 0 {
		cMiddle.Add(1)
		return v // early return: only the leaf child
	}
	v += store.Get(x % 16)
	cMiddle.Add(1)
	return v
}

//go:noinline
func top(w, i int) int {
	s := 0
	for j := 0; j < 3; j++ {
		s += middle(w*1000 + i*10 + j)
	}
	if i%7 == 0 {
		cTop.Add(1)
		return s // early return: 3 middle children
	}
	s += middle(i)
	cTop.Add(1)
	return s * 3 // 4 middle children
}

// ---- stack growth while a traced frame is live ----

// recurse is not traced; its big frames force the goroutine stack to be grown (copied) several
// times while grow's frame is live below it.
func recurse(n int) int {
	var buf [512]int
	for i := range buf {
		buf[i] = n + i
	}
	if n == 0 {
		return bottom(buf[3])
	}
	return recurse(n-1) + buf[(n*7)%512]%3
}

//go:noinline
func bottom(x int) int {
	cBottom.Add(1)
	return x + 1
}

//go:noinline
func grow(n int) int {
	r := recurse(n)
	cGrow.Add(1)
	return r
}

// deep is traced and recursive with a big frame: its own prologue calls runtime.morestack, which
// copies the stack and re-runs the function from its first instruction.
//
//go:noinline
func deep(n int) int {
	var buf [1024]int
	for i := range buf {
		buf[i] = i ^ n
	}
	if n == 0 {
		cDeep.Add(1)
		return buf[5]
	}
	r := deep(n-1) + buf[n%1024]%7
	cDeep.Add(1)
	return r
}

// ---- panic then recover inside a traced call ----

//go:noinline
func explode(x int) int {
	if x >= 0 {
		uExplode.Add(1)
		panic(fmt.Sprintf("boom %d", x))
	}
	cExplode.Add(1)
	return x
}

//go:noinline
func mayPanic(x int) int {
	if x%5 == 0 {
		uMayPanic.Add(1)
		return explode(x) + 1 // never returns normally
	}
	cMayPanic.Add(1)
	return x * 3
}

//go:noinline
func safeCall(x int) (res int) {
	defer func() {
		if r := recover(); r != nil {
			res = -1000 - x
			if unwindCalls {
				// A traced call made by the deferred function while the panicking
				// frames (mayPanic, explode) are still on the stack below it.
				res += x - onUnwind(x)
			}
		}
		cSafeCall.Add(1)
	}()
	res = mayPanic(x)
	return res
}

//go:noinline
func onUnwind(x int) int {
	cOnUnwind.Add(1)
	return x
}

//go:noinline
func afterPanic(x int) int {
	cAfterPanic.Add(1)
	return x + 11
}

//go:noinline
func guard(n int) int {
	s := 0
	for x := 0; x < n; x++ {
		s += safeCall(x)
		s += afterPanic(x)
	}
	cGuard.Add(1)
	return s
}

// ---- a panic recovered by an untraced function, then more traced calls ----

//go:noinline
func thrower(x int) int {
	if x%2 == 0 {
		uThrower.Add(1)
		panic(x)
	}
	cThrower.Add(1)
	return x * 7
}

// catch is not traced: the traced thrower it calls may be unwound without any traced return
// before the next traced call (sibling) on the same goroutine.
//
//go:noinline
func catch(x int) (r int) {
	defer func() {
		if recover() != nil {
			r = -x
		}
	}()
	return thrower(x)
}

//go:noinline
func sibling(x int) int {
	cSibling.Add(1)
	return x + 1
}

//go:noinline
func catcher(n int) int {
	s := 0
	for x := 0; x < n; x++ {
		s += catch(x)
		s += sibling(x)
	}
	cCatcher.Add(1)
	return s
}

// ---- the stack shrunk by the GC while a traced frame is live ----

//go:noinline
func afterShrink(x int) int {
	cAfterShrink.Add(1)
	return x % 1000
}

//go:noinline
func shrinker(depth int, parked chan<- struct{}, resume <-chan struct{}) int {
	r := recurse(depth) // grows the stack a lot, then returns
	parked <- struct{}{}
	<-resume // meanwhile runtime.GC() shrinks (copies) this goroutine's now mostly unused stack
	r += afterShrink(r)
	cShrinker.Add(1)
	return r
}

// ---- many goroutines inside a traced call at once ----

//go:noinline
func blocker(i int, started *sync.WaitGroup, gate <-chan struct{}) int {
	started.Done()
	<-gate
	cBlocker.Add(1)
	return i * 2
}

// ---- calls in progress while a tracer attaches ----

//go:noinline
func afterAttach(i int) int {
	cAfterAttach.Add(1)
	return i + 100
}

//go:noinline
func postInflight(i int) int {
	cPostInflight.Add(1)
	return i * 3
}

// inflight is entered before -wait-file is released: a tracer attaching by pid sees its return
// but never its entry.
//
//go:noinline
func inflight(i int, entered *sync.WaitGroup, gate <-chan struct{}) int {
	entered.Done()
	<-gate
	r := afterAttach(i)
	cInflight.Add(1)
	return r
}

// ---- runtime.Goexit inside a traced call ----

//go:noinline
func quitter(x int, wg *sync.WaitGroup, out *atomic.Int64) int {
	defer wg.Done()
	out.Add(int64(x))
	if x >= 0 {
		uQuitter.Add(1)
		runtime.Goexit()
	}
	cQuitter.Add(1)
	return x
}

// ---- goroutines spawned from a traced call ----

//go:noinline
func child(i int) int {
	cChild.Add(1)
	return i * 5
}

//go:noinline
func fanout(n int) int {
	var wg sync.WaitGroup
	var sum atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sum.Add(int64(child(i)))
		}(i)
	}
	wg.Wait()
	cFanout.Add(1)
	return int(sum.Load())
}

// ---- expectations ----

type expectation struct {
	// Normal returns per traced function: the spans a tracer must produce. Includes Startup.
	Counts map[string]int64 `json:"counts"`
	// Calls made before -wait-file was released (not traced when attaching by pid then).
	Startup map[string]int64 `json:"startup"`
	// Calls that never returned (panic or Goexit unwound them).
	Unwound map[string]int64 `json:"unwound"`
	// Allowed parent names per function; "" means a root span.
	Parents map[string][]string `json:"parents"`
	// Allowed [min, max] number of children named CHILD of one span named PARENT:
	// children[PARENT][CHILD].
	Children map[string]map[string][2]int `json:"children"`
	// Every traced function of the program, for GOTEL_PROBES.
	Probes []string `json:"probes"`
}

func writeExpect(path string, guards, fan, catchN int) {
	e := expectation{
		Counts: map[string]int64{
			"main.first":        cFirst.Load(),
			"main.top":          cTop.Load(),
			"main.middle":       cMiddle.Load(),
			"main.leaf":         cLeaf.Load(),
			"main.(*Store).Get": cGet.Load(),
			"main.grow":         cGrow.Load(),
			"main.bottom":       cBottom.Load(),
			"main.deep":         cDeep.Load(),
			"main.guard":        cGuard.Load(),
			"main.safeCall":     cSafeCall.Load(),
			"main.mayPanic":     cMayPanic.Load(),
			"main.explode":      cExplode.Load(),
			"main.afterPanic":   cAfterPanic.Load(),
			"main.quitter":      cQuitter.Load(),
			"main.fanout":       cFanout.Load(),
			"main.child":        cChild.Load(),
			"main.onUnwind":     cOnUnwind.Load(),
			"main.thrower":      cThrower.Load(),
			"main.sibling":      cSibling.Load(),
			"main.catcher":      cCatcher.Load(),
			"main.shrinker":     cShrinker.Load(),
			"main.afterShrink":  cAfterShrink.Load(),
			"main.blocker":      cBlocker.Load(),
			"main.inflight":     cInflight.Load(),
			"main.afterAttach":  cAfterAttach.Load(),
			"main.postInflight": cPostInflight.Load(),
		},
		Startup: map[string]int64{"main.first": 1, "main.inflight": cInflight.Load()},
		Unwound: map[string]int64{
			"main.mayPanic": uMayPanic.Load(),
			"main.explode":  uExplode.Load(),
			"main.quitter":  uQuitter.Load(),
			"main.thrower":  uThrower.Load(),
		},
		Parents: map[string][]string{
			"main.first":        {""},
			"main.top":          {""},
			"main.middle":       {"main.top"},
			"main.leaf":         {"main.middle"},
			"main.(*Store).Get": {"main.middle"},
			"main.grow":         {""},
			"main.bottom":       {"main.grow", "main.shrinker"},
			"main.deep":         {"", "main.deep"},
			"main.guard":        {""},
			"main.safeCall":     {"main.guard"},
			"main.mayPanic":     {"main.safeCall"},
			"main.afterPanic":   {"main.guard"},
			"main.fanout":       {""},
			// Another goroutine: a root, or the spawning fanout call if the tracer links them.
			"main.child": {"", "main.fanout"},
			// Called by safeCall's deferred function while explode is unwinding: either
			// parent is defensible, but it must be a span that exists.
			"main.onUnwind":    {"main.safeCall", "main.explode"},
			"main.thrower":     {"main.catcher"},
			"main.sibling":     {"main.catcher"},
			"main.catcher":     {""},
			"main.shrinker":    {""},
			"main.afterShrink": {"main.shrinker"},
			"main.blocker":     {""},
			// Under inflight, or a root when inflight's entry was not seen (attached later).
			"main.afterAttach":  {"main.inflight", ""},
			"main.inflight":     {""},
			"main.postInflight": {""},
		},
		Children: map[string]map[string][2]int{
			"main.top":          {"main.middle": {3, 4}},
			"main.middle":       {"main.leaf": {0, 1}, "main.(*Store).Get": {0, 1}},
			"main.grow":         {"main.bottom": {1, 1}},
			"main.deep":         {"main.deep": {0, 1}},
			"main.safeCall":     {"main.mayPanic": {0, 1}, "main.onUnwind": {0, 1}},
			"main.catcher":      {"main.thrower": {0, catchN}, "main.sibling": {catchN, catchN}},
			"main.shrinker":     {"main.bottom": {1, 1}, "main.afterShrink": {1, 1}},
			"main.guard":        {"main.safeCall": {10, 10 + guards - 1}, "main.afterPanic": {10, 10 + guards - 1}},
			"main.fanout":       {"main.child": {0, fan}},
			"main.first":        {},
			"main.leaf":         {},
			"main.(*Store).Get": {},
			"main.bottom":       {},
			"main.mayPanic":     {},
			"main.afterPanic":   {},
			"main.child":        {},
			"main.onUnwind":     {},
			"main.thrower":      {},
			"main.sibling":      {},
			"main.afterShrink":  {},
			"main.blocker":      {},
			"main.afterAttach":  {},
			"main.postInflight": {},
			"main.inflight":     {"main.afterAttach": {1, 1}},
		},
	}
	for k := range e.Counts {
		e.Probes = append(e.Probes, k)
	}
	sort.Strings(e.Probes)
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "engine:", err)
		os.Exit(2)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "engine:", err)
		os.Exit(2)
	}
}

// phase notes on stderr how long the work before it took, when ENGINE_TIMING is set.
var phaseStart = time.Now()

func phase(name string) {
	if os.Getenv("ENGINE_TIMING") != "" {
		fmt.Fprintf(os.Stderr, "engine: %-9s %v\n", name, time.Since(phaseStart))
	}
	phaseStart = time.Now()
}

func waitFor(path string) {
	fmt.Fprintln(os.Stderr, "engine: waiting")
	deadline := time.Now().Add(120 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "engine: gave up waiting for", path)
			os.Exit(3)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func main() {
	f := first(7) // the very first call: launch mode must not miss it

	workers := flag.Int("workers", 4, "goroutines calling top concurrently")
	iters := flag.Int("iters", 50, "top calls per worker")
	depth := flag.Int("depth", 300, "untraced recursion depth inside grow (stack growth)")
	deepN := flag.Int("deep", 12, "traced recursion depth of deep (<= 24)")
	guards := flag.Int("guards", 3, "goroutines running guard (panic/recover)")
	quitters := flag.Int("quitters", 8, "goroutines calling quitter (runtime.Goexit)")
	fan := flag.Int("fanout", 6, "goroutines spawned by fanout")
	catchN := flag.Int("catch", 9, "calls of catch (panic recovered by an untraced function)")
	blockers := flag.Int("blockers", 200, "goroutines inside blocker at once")
	nInflight := flag.Int("inflight", 4, "goroutines inside inflight while waiting for -wait-file")
	exitCode := flag.Int("exit", 0, "exit with this code after the work")
	flag.BoolVar(&unwindCalls, "unwind-calls", false, "call the traced onUnwind from a deferred recover during a panic")
	waitFile := flag.String("wait-file", "", "wait until this file exists before working")
	expect := flag.String("expect", "", "write the expected spans (JSON) to this file")
	flag.Parse()
	if *deepN > 24 {
		*deepN = 24
	}

	// Goroutines inside a traced call before the wait (a tracer attaching by pid misses
	// their entries), released right after it.
	var inflightWG, entered sync.WaitGroup
	gate := make(chan struct{})
	var inflightSum atomic.Int64
	for i := 0; i < *nInflight; i++ {
		entered.Add(1)
		inflightWG.Add(1)
		go func(i int) {
			defer inflightWG.Done()
			r := inflight(i, &entered, gate)
			r += postInflight(i) // the same goroutine, after the unmatched return
			inflightSum.Add(int64(r))
		}(i)
	}
	entered.Wait()

	if *waitFile != "" {
		waitFor(*waitFile)
	}
	phaseStart = time.Now()
	close(gate)
	inflightWG.Wait()
	fmt.Printf("first: %d inflight: %d\n", f, inflightSum.Load())
	phase("first")

	// Goexit first, so that later goroutines reuse the g structures of the dead ones.
	{
		var wg sync.WaitGroup
		var sum atomic.Int64
		for q := 0; q < *quitters; q++ {
			wg.Add(1)
			go quitter(q, &wg, &sum)
		}
		wg.Wait()
		fmt.Printf("quitters: %d sum=%d\n", *quitters, sum.Load())
		phase("quitters")
	}

	// Panic and recover, several goroutines at once.
	{
		var wg sync.WaitGroup
		res := make([]int, *guards)
		for g := 0; g < *guards; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				res[g] = guard(10 + g)
			}(g)
		}
		wg.Wait()
		fmt.Printf("guards: %v\n", res)
		phase("guards")
	}

	// A panic recovered by an untraced function, on the main goroutine.
	fmt.Printf("catcher: %d\n", catcher(*catchN))
	phase("catcher")

	// The GC shrinks a stack below a live traced frame.
	{
		parked, resume, done := make(chan struct{}), make(chan struct{}), make(chan int)
		go func() { done <- shrinker(*depth, parked, resume) }()
		<-parked
		runtime.GC()
		runtime.GC()
		close(resume)
		fmt.Printf("shrinker: %d\n", <-done)
		phase("shrinker")
	}

	// Many goroutines inside one traced function at the same time.
	{
		var started, wg sync.WaitGroup
		gate := make(chan struct{})
		var sum atomic.Int64
		for i := 0; i < *blockers; i++ {
			started.Add(1)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				sum.Add(int64(blocker(i, &started, gate)))
			}(i)
		}
		started.Wait()
		close(gate)
		wg.Wait()
		fmt.Printf("blockers: %d sum=%d\n", *blockers, sum.Load())
		phase("blockers")
	}

	// Stack growth: in fresh goroutines (small stacks), while grow / deep frames are live.
	{
		var wg sync.WaitGroup
		res := make([]int, 4)
		for k := 0; k < 2; k++ {
			wg.Add(2)
			go func(k int) {
				defer wg.Done()
				res[2*k] = grow(*depth + k)
			}(k)
			go func(k int) {
				defer wg.Done()
				res[2*k+1] = deep(*deepN - k)
			}(k)
		}
		wg.Wait()
		fmt.Printf("stack: %v\n", res)
		phase("stack")
	}

	// Goroutines spawned from inside a traced call.
	fmt.Printf("fanout: %d\n", fanout(*fan))
	phase("fanout")

	// The main load: nesting on several goroutines at once.
	for k := 0; k < 16; k++ {
		store.m[k] = k * k
	}
	{
		var wg sync.WaitGroup
		res := make([]int, *workers)
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				s := 0
				for i := 0; i < *iters; i++ {
					s += top(w, i)
					if i%16 == 15 {
						time.Sleep(time.Millisecond) // pace the load a little
					}
				}
				res[w] = s
			}(w)
		}
		wg.Wait()
		fmt.Printf("workers: %v\n", res)
		phase("workers")
	}

	if *expect != "" {
		writeExpect(*expect, *guards, *fan, *catchN)
	}
	fmt.Println("done")
	if *exitCode != 0 {
		os.Exit(*exitCode)
	}
}
