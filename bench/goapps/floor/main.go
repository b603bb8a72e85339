// floor attaches bare uprobes running an empty eBPF program ("r0 = 0; exit") to one function
// of a Go binary: at its first instruction, and with -ret also at every RET instruction. It is
// the floor gotel's per-call cost is compared with (bench/run.sh): the price of the traps
// alone, measured in the same run on the same machine.
//
// No dependencies: the program is loaded with bpf(BPF_PROG_LOAD) and attached through the
// uprobe PMU (perf_event_open + PERF_EVENT_IOC_SET_BPF), as libbpf and aya do. RET offsets
// come from `go tool objdump`.
//
//	floor -bin PATH -sym main.work [-ret [-noentry]] [-prologue] [-multi] -pid PID -ready FILE
//
// With -prologue the entry trap is after the stack-check prologue, where gotel places it.
//
// With -multi the traps are one uprobe_multi link (BPF_TRACE_UPROBE_MULTI, kernel 6.6+), as
// gotel attaches them on kernels from 6.10; a trap costs less that way than through a perf
// event, so a floor of perf-event uprobes would overstate the price of gotel's traps.
//
// Writes FILE once attached, stays attached until PID exits (or SIGINT/SIGTERM), then prints
// {"probes":N} on stdout.
package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const (
	sysBPF             = 321 // amd64
	sysPerfEventOpen   = 298
	bpfProgLoad        = 5
	progTypeKprobe     = 2
	perfEventIocEnable = 0x2400
	perfEventIocSetBPF = 0x40042408
	bpfLinkCreate      = 28
	traceUprobeMulti   = 48 // BPF_TRACE_UPROBE_MULTI
)

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "floor: "+format+"\n", a...)
	os.Exit(1)
}

func loadEmptyProgram(attachType uint32) int {
	insns := []byte{
		0xb7, 0, 0, 0, 0, 0, 0, 0, // mov64 r0, 0
		0x95, 0, 0, 0, 0, 0, 0, 0, // exit
	}
	license := []byte("GPL\x00")
	logBuf := make([]byte, 4096)
	attr := make([]byte, 128)
	le := binary.LittleEndian
	le.PutUint32(attr[0:], progTypeKprobe)
	le.PutUint32(attr[4:], uint32(len(insns)/8))
	le.PutUint64(attr[8:], uint64(uintptr(unsafe.Pointer(&insns[0]))))
	le.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&license[0]))))
	le.PutUint32(attr[24:], 1)
	le.PutUint32(attr[28:], uint32(len(logBuf)))
	le.PutUint64(attr[32:], uint64(uintptr(unsafe.Pointer(&logBuf[0]))))
	copy(attr[48:64], "floor_empty")
	le.PutUint32(attr[68:], attachType) // expected_attach_type
	fd, _, errno := syscall.Syscall(sysBPF, bpfProgLoad, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	if errno != 0 {
		die("BPF_PROG_LOAD: %v: %s", errno, bytes.TrimRight(logBuf, "\x00"))
	}
	return int(fd)
}

func uprobeType() uint32 {
	b, err := os.ReadFile("/sys/bus/event_source/devices/uprobe/type")
	if err != nil {
		die("uprobe PMU: %v", err)
	}
	t, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		die("uprobe PMU type: %v", err)
	}
	return uint32(t)
}

func attach(pmu uint32, path string, fileOffset uint64, pid int, prog int) int {
	cpath := append([]byte(path), 0)
	attr := make([]byte, 128)
	le := binary.LittleEndian
	le.PutUint32(attr[0:], pmu)
	le.PutUint32(attr[4:], uint32(len(attr)))
	le.PutUint64(attr[56:], uint64(uintptr(unsafe.Pointer(&cpath[0])))) // config1: path
	le.PutUint64(attr[64:], fileOffset)                                 // config2: offset
	fd, _, errno := syscall.Syscall6(sysPerfEventOpen, uintptr(unsafe.Pointer(&attr[0])), uintptr(pid), ^uintptr(0), ^uintptr(0), 0, 0)
	if errno != 0 {
		die("perf_event_open(uprobe %s:%#x): %v", path, fileOffset, errno)
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, perfEventIocSetBPF, uintptr(prog)); errno != 0 {
		die("PERF_EVENT_IOC_SET_BPF: %v", errno)
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, perfEventIocEnable, 0); errno != 0 {
		die("PERF_EVENT_IOC_ENABLE: %v", errno)
	}
	return int(fd)
}

// attachMulti attaches prog at every offset of path as one uprobe_multi link, filtered on pid.
func attachMulti(path string, offsets []uint64, pid int, prog int) int {
	cpath := append([]byte(path), 0)
	attr := make([]byte, 128)
	le := binary.LittleEndian
	le.PutUint32(attr[0:], uint32(prog))
	le.PutUint32(attr[8:], traceUprobeMulti)
	le.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&cpath[0]))))
	le.PutUint64(attr[24:], uint64(uintptr(unsafe.Pointer(&offsets[0]))))
	le.PutUint32(attr[48:], uint32(len(offsets)))
	if pid > 0 {
		le.PutUint32(attr[56:], uint32(pid))
	}
	fd, _, errno := syscall.Syscall(sysBPF, bpfLinkCreate, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	if errno != 0 {
		die("BPF_LINK_CREATE(uprobe_multi %s, %d offsets): %v", path, len(offsets), errno)
	}
	return int(fd)
}

// symbol returns the link-time address and size of sym and the file offset of its address.
func symbol(path, sym string) (addr, size, off uint64) {
	f, err := elf.Open(path)
	if err != nil {
		die("%v", err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		die("%s: %v", path, err)
	}
	for _, s := range syms {
		if s.Name != sym {
			continue
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD && s.Value >= p.Vaddr && s.Value < p.Vaddr+p.Filesz {
				return s.Value, s.Size, s.Value - p.Vaddr + p.Off
			}
		}
		die("%s: %s is in no loaded segment", path, sym)
	}
	die("%s: no symbol %s", path, sym)
	return
}

// code returns the instructions of sym, (address, text) pairs from `go tool objdump`.
func code(path, sym string) (addrs []uint64, texts []string) {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	out, err := exec.Command(goBin, "tool", "objdump", "-s", "^"+regexp.QuoteMeta(sym)+"$", path).Output()
	if err != nil {
		die("go tool objdump: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		if a, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64); err == nil {
			addrs = append(addrs, a)
			texts = append(texts, strings.Join(f[3:], " "))
		}
	}
	return addrs, texts
}

// rets returns the addresses of the RET instructions of sym.
func rets(addrs []uint64, texts []string) []uint64 {
	var r []uint64
	for i, t := range texts {
		if t == "RET" {
			r = append(r, addrs[i])
		}
	}
	return r
}

// afterPrologue returns the address of the first instruction after sym's stack-check prologue
// (`CMPQ SP|R12, 0x10(R14); JBE`), where gotel places its entry traps, or sym's address when
// it has none. There the instruction is usually `PUSHQ BP`, which the kernel emulates, where
// the first one (the CMPQ) is stepped out of line: a trap there costs more.
func afterPrologue(addrs []uint64, texts []string) uint64 {
	for i := 0; i+1 < len(texts) && i < 6; i++ {
		if strings.HasPrefix(texts[i], "CMPQ ") && strings.HasSuffix(texts[i], ", 0x10(R14)") &&
			strings.HasPrefix(texts[i+1], "JBE ") && i+2 < len(addrs) {
			return addrs[i+2]
		}
	}
	return addrs[0]
}

func main() {
	bin := flag.String("bin", "", "Go binary")
	sym := flag.String("sym", "main.work", "function")
	withRet := flag.Bool("ret", false, "also probe every RET instruction")
	noEntry := flag.Bool("noentry", false, "with -ret: only the RETs (gotel's runtime.newproc1 hook)")
	prologue := flag.Bool("prologue", false, "the entry trap after the stack-check prologue, as gotel places it")
	multi := flag.Bool("multi", false, "attach as one uprobe_multi link instead of perf-event uprobes")
	pid := flag.Int("pid", -1, "process to filter on (as gotel does); -1 = every process")
	ready := flag.String("ready", "", "file written once attached")
	flag.Parse()
	if *bin == "" {
		die("-bin is required")
	}
	addr, _, off := symbol(*bin, *sym)
	addrs, texts := code(*bin, *sym)
	if len(addrs) == 0 || addrs[0] != addr {
		die("go tool objdump: no code for %s", *sym)
	}
	offsets := []uint64{off}
	if *prologue {
		offsets[0] = off + (afterPrologue(addrs, texts) - addr)
	}
	if *noEntry {
		offsets = nil
	}
	if *withRet {
		r := rets(addrs, texts)
		if len(r) == 0 {
			die("no RET found in %s", *sym)
		}
		for _, a := range r {
			offsets = append(offsets, off+(a-addr))
		}
	}
	var fds []int
	if *multi {
		fds = append(fds, attachMulti(*bin, offsets, *pid, loadEmptyProgram(traceUprobeMulti)))
	} else {
		prog := loadEmptyProgram(0)
		pmu := uprobeType()
		for _, o := range offsets {
			fds = append(fds, attach(pmu, *bin, o, *pid, prog))
		}
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte("ok\n"), 0o644); err != nil {
			die("%v", err)
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-stop:
			break wait
		case <-tick.C:
			if *pid > 0 && syscall.Kill(*pid, 0) != nil {
				break wait
			}
		}
	}
	for _, fd := range fds {
		syscall.Close(fd)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"probes": len(offsets)})
}
