// Command stress is the target program of gotel's hardening tests (e2e/tests/hardening_*.rs).
//
// It runs workloads that are hard on a uprobe tracer and checks nothing itself: everything it
// prints on stdout is computed from the work, so its stdout and exit code must be identical with
// and without tracing. Each traced function is //go:noinline and counts the calls that returned
// normally and the calls entered; with -expect FILE both are written as JSON ("counts": the spans
// a tracer must produce; "entries": the calls it sees start; the difference was unwound by panic
// or runtime.Goexit).
//
//	stress -mode goroutines,deep,panic,goexit,gc,migrate,steady,burst [-n N] [-interval-ms MS]
//	       [-peak-ms MS] [-wait-file PATH] [-hold-file PATH] [-expect PATH] [-exit CODE]
//
// Modes (run in the order given):
//
//	goroutines  N goroutines (default 10000) are all inside gate() at once (held -peak-ms), then
//	            each calls work()
//	deep        traced recursion descend() 24 levels deep with big frames, and at the bottom
//	            grow(), which recurses untraced with 1 KiB frames so the stack is copied many times
//	panic       safe() recovers panics raised in boom() -> boom2()
//	goexit      goroutines call quit() -> quitInner(), which calls runtime.Goexit for some calls
//	gc          GOGC=1 style: alloc() allocates while another goroutine loops runtime.GC()
//	migrate     GOMAXPROCS(4), goroutines in hop() yield, sleep and ping-pong over channels
//	steady      tick() every -interval-ms, N times (default 200)
//	burst       4 goroutines call work() N times (default 20000) as fast as they can; the
//	            program exits right after the last return (events in flight)
//
// -wait-file waits (at most 120 s) for PATH before working; -hold-file waits (at most 120 s)
// after the work, once -expect is written, before exiting (so a test can look at the tracer).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Per traced function: calls that returned normally, and calls entered.
var counts, entries = map[string]*atomic.Int64{}, map[string]*atomic.Int64{}

func counter(name string) *atomic.Int64 {
	c := &atomic.Int64{}
	counts[name] = c
	entries[name] = &atomic.Int64{}
	return c
}

// enter counts a call of a traced function (read-only map lookups: safe concurrently).
func enter(name string) { entries[name].Add(1) }

var (
	cWork      = counter("main.work")
	cGate      = counter("main.gate")
	cDescend   = counter("main.descend")
	cGrow      = counter("main.grow")
	cSafe      = counter("main.safe")
	cBoom      = counter("main.boom")
	cBoom2     = counter("main.boom2")
	cQuit      = counter("main.quit")
	cQuitInner = counter("main.quitInner")
	cAlloc     = counter("main.alloc")
	cHop       = counter("main.hop")
	cTick      = counter("main.tick")
)

// Results printed on stdout.
var results []string

func report(format string, args ...any) {
	results = append(results, fmt.Sprintf(format, args...))
}

//go:noinline
func work(x int) int {
	enter("main.work")
	r := x*x%9973 + 1
	cWork.Add(1)
	return r
}

// ---- goroutines ----

//go:noinline
func gate(id int, g <-chan struct{}, entered *atomic.Int64) int {
	enter("main.gate")
	entered.Add(1)
	<-g
	cGate.Add(1)
	return id % 7
}

func modeGoroutines(n int, peak time.Duration) {
	var wg sync.WaitGroup
	var entered atomic.Int64
	var sum atomic.Int64
	g := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := gate(i, g, &entered)
			s += work(i)
			sum.Add(int64(s))
		}(i)
	}
	deadline := time.Now().Add(60 * time.Second)
	for entered.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(peak) // every goroutine is inside a traced call now
	close(g)
	wg.Wait()
	report("goroutines: n=%d sum=%d", n, sum.Load())
}

// ---- deep stacks ----

var sink atomic.Int64

//go:noinline
func recurse(n int) int {
	var pad [1024]byte
	pad[n%1024] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	r := recurse(n-1) + int(pad[n%1024])
	sink.Add(int64(pad[(n*7)%1024]))
	return r
}

//go:noinline
func grow(n int) int {
	enter("main.grow")
	r := recurse(n)
	cGrow.Add(1)
	return r
}

//go:noinline
func descend(level, n int) int {
	enter("main.descend")
	var pad [512]byte
	pad[level%512] = byte(level)
	var r int
	if level == 0 {
		r = grow(n)
	} else {
		r = descend(level-1, n) + int(pad[level%512])
	}
	cDescend.Add(1)
	return r
}

// onWorkers runs body(w) on `workers` goroutines at once and returns the sum of their results.
func onWorkers(workers int, body func(w int) int64) int64 {
	var wg sync.WaitGroup
	var sum atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			sum.Add(body(w))
		}(w)
	}
	wg.Wait()
	return sum.Load()
}

func modeDeep(n int) {
	sum := onWorkers(4, func(w int) (s int64) {
		for i := 0; i < n/100+1; i++ {
			// Fresh goroutines start with small stacks: every call grows them.
			done := make(chan int)
			go func() { done <- descend(24, 2000+w*100) }()
			s += int64(<-done)
		}
		return s
	})
	report("deep: sum=%d", sum)
}

// ---- panic and recover ----

//go:noinline
func boom2(x int) int {
	enter("main.boom2")
	if x%2 == 0 {
		panic(fmt.Sprintf("boom %d", x))
	}
	cBoom2.Add(1)
	return x + 1
}

//go:noinline
func boom(x int) int {
	enter("main.boom")
	r := boom2(x) * 2
	cBoom.Add(1)
	return r
}

//go:noinline
func safe(x int) (r int) {
	enter("main.safe")
	defer func() {
		if p := recover(); p != nil {
			r = -len(p.(string))
		}
		cSafe.Add(1)
	}()
	return boom(x)
}

func modePanic(n int) {
	sum := onWorkers(4, func(w int) (s int64) {
		for i := 0; i < n/4; i++ {
			s += int64(safe(w*100000 + i))
		}
		return s
	})
	report("panic: sum=%d", sum)
}

// ---- runtime.Goexit ----

//go:noinline
func quitInner(x int) int {
	enter("main.quitInner")
	if x%3 == 0 {
		runtime.Goexit()
	}
	cQuitInner.Add(1)
	return x * 3
}

//go:noinline
func quit(x int) int {
	enter("main.quit")
	r := quitInner(x) + 1
	cQuit.Add(1)
	return r
}

func modeGoexit(n int) {
	var wg sync.WaitGroup
	var sum atomic.Int64
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sum.Add(int64(quit(i)))
		}(i)
		if i%64 == 63 {
			wg.Wait()
		}
	}
	wg.Wait()
	report("goexit: sum=%d", sum.Load())
}

// ---- heavy GC ----

//go:noinline
func alloc(x int) int {
	enter("main.alloc")
	b := make([][]byte, 0, 16)
	for i := 0; i < 16; i++ {
		b = append(b, make([]byte, 256+x%512))
	}
	s := 0
	for _, p := range b {
		s += len(p)
	}
	cAlloc.Add(1)
	return s
}

func modeGC(n int) {
	old := debug.SetGCPercent(1)
	defer debug.SetGCPercent(old)
	stop := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	sum := onWorkers(4, func(w int) (s int64) {
		for i := 0; i < n/4; i++ {
			s += int64(alloc(w + i))
		}
		return s
	})
	close(stop)
	<-gcDone
	report("gc: sum=%d", sum)
}

// ---- goroutines migrating between threads ----

//go:noinline
func hop(x int, ping chan int, pong chan int) int {
	enter("main.hop")
	r := x
	for i := 0; i < 4; i++ {
		runtime.Gosched()
		ping <- r
		r = <-pong + 1
		if i == 2 {
			time.Sleep(20 * time.Microsecond)
		}
	}
	cHop.Add(1)
	return r
}

func modeMigrate(n int) {
	old := runtime.GOMAXPROCS(4)
	defer runtime.GOMAXPROCS(old)
	var wg sync.WaitGroup
	var sum atomic.Int64
	pairs := 32
	for p := 0; p < pairs; p++ {
		ping, pong := make(chan int), make(chan int)
		wg.Add(2)
		go func() { // the echo side (untraced)
			defer wg.Done()
			for v := range ping {
				pong <- v * 2 % 10007
			}
		}()
		go func(p int) {
			defer wg.Done()
			for i := 0; i < n/pairs; i++ {
				sum.Add(int64(hop(p*1000+i, ping, pong)))
			}
			close(ping)
		}(p)
	}
	wg.Wait()
	report("migrate: sum=%d", sum.Load())
}

// ---- steady and burst ----

//go:noinline
func tick(i int) int {
	enter("main.tick")
	cTick.Add(1)
	return i * 2
}

func modeSteady(n int, interval time.Duration) {
	s := 0
	for i := 0; i < n; i++ {
		s += tick(i)
		time.Sleep(interval)
	}
	report("steady: n=%d sum=%d", n, s)
}

func modeBurst(n int) {
	sum := onWorkers(4, func(w int) int64 {
		s := 0
		for i := 0; i < n/4; i++ {
			s += work(w*n + i)
		}
		return int64(s)
	})
	report("burst: n=%d sum=%d", n, sum)
}

// ---- main ----

func waitFor(path, what string) {
	fmt.Fprintln(os.Stderr, "stress:", what)
	deadline := time.Now().Add(120 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "stress: gave up waiting for", path)
			os.Exit(99)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeExpect(path string) {
	c, e := map[string]int64{}, map[string]int64{}
	names := []string{}
	for k, v := range counts {
		c[k] = v.Load()
		e[k] = entries[k].Load()
		names = append(names, k)
	}
	sort.Strings(names)
	b, err := json.Marshal(map[string]any{"counts": c, "entries": e, "probes": names})
	if err != nil {
		panic(err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		panic(err)
	}
}

func main() {
	mode := flag.String("mode", "goroutines", "comma-separated workloads")
	n := flag.Int("n", 0, "scale of each workload (0: its default)")
	interval := flag.Int("interval-ms", 10, "steady: pause between calls")
	peak := flag.Int("peak-ms", 1500, "goroutines: how long all goroutines stay inside gate()")
	waitFile := flag.String("wait-file", "", "wait until this file exists before working")
	holdFile := flag.String("hold-file", "", "after the work, wait until this file exists before exiting")
	expect := flag.String("expect", "", "write the returned calls per traced function (JSON) here")
	exit := flag.Int("exit", 0, "exit code")
	flag.Parse()

	if *waitFile != "" {
		waitFor(*waitFile, "waiting")
	}
	def := func(d int) int {
		if *n > 0 {
			return *n
		}
		return d
	}
	for _, m := range strings.Split(*mode, ",") {
		switch m {
		case "goroutines":
			modeGoroutines(def(10000), time.Duration(*peak)*time.Millisecond)
		case "deep":
			modeDeep(def(400))
		case "panic":
			modePanic(def(4000))
		case "goexit":
			modeGoexit(def(3000))
		case "gc":
			modeGC(def(20000))
		case "migrate":
			modeMigrate(def(3200))
		case "steady":
			modeSteady(def(200), time.Duration(*interval)*time.Millisecond)
		case "burst":
			modeBurst(def(20000))
		default:
			fmt.Fprintln(os.Stderr, "stress: unknown mode", m)
			os.Exit(98)
		}
	}
	for _, r := range results {
		fmt.Println(r)
	}
	if *expect != "" {
		writeExpect(*expect)
	}
	if *holdFile != "" {
		waitFor(*holdFile, "holding")
	}
	os.Exit(*exit)
}
