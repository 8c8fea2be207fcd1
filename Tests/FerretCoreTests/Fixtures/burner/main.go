// burner is the CPU profiler's fixture: a Go program that burns CPU in known
// places, so a profile of it has a known answer.
//
// Modes (-mode):
//
//	split   hotA and hotB, two non-inlined functions spinning 60 ms and 20 ms of CPU in
//	        turn: their flat shares are 75% and 25%
//	inline  the work happens in inlinedHot, which the compiler inlines into
//	        outerLoop: the profile must show the inlined frame with its file:line
//	cgo     the work happens in C (cburn, through cgo; only cgo builds)
//	leaf    the work happens in leafSpin, a leaf without a frame of its own (no frame
//	        pointer pushed), called by leafCaller: a frame-pointer walk skips leafCaller
//	asm     the work happens in spin.ClobberSpin (spin/spin_amd64.s), assembly that uses RBP as
//	        its loop counter as crypto/sha256's block does, called by asmCaller: a
//	        frame-pointer walk from it reads garbage
//	work    throughput: each worker repeats a fixed-size work unit (workUnit, 2^16
//	        iterations of the same multiply-add loop, ~75 µs) and counts it; every
//	        second a line "units TOTAL RATE/s" goes to stdout, or with -report FILE
//	        the cumulative count is kept in FILE's first 8 bytes instead (a shared
//	        mapping, native-endian uint64, updated after every unit), for a harness
//	        to read at any instant (bench/profiler_bench.py)
//
// -pprof ADDR also serves net/http/pprof, to compare with Go's own profiler.
// The first line on stdout is "ready" (and "pprof on ADDR" when serving).
// Standard library only; builds with Go 1.19 and later.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"ferret.test/burner/spin"
)

var sink uint64

// threadCPU is the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID); the
// burning goroutines are locked to their threads.
func threadCPU() time.Duration {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 3, uintptr(unsafe.Pointer(&ts)), 0)
	return time.Duration(ts.Nano())
}

// hotA and hotB spin for a given amount of CPU time, not a given number of
// iterations (two copies of one loop can run at different speeds, by code
// alignment) nor of wall time (a preempted thread loses CPU, not time): the
// split is 3:1 in CPU time. The clock (a system call) is read every 2^18
// iterations only, about 0.3 ms of work, so it costs about 0.3%.
//
//go:noinline
func hotA(d time.Duration) uint64 {
	x := uint64(d)
	end := threadCPU() + d
	for {
		for i := 0; i < 1<<18; i++ {
			x = x*6364136223846793005 + uint64(i)
		}
		if threadCPU() >= end {
			return x
		}
	}
}

//go:noinline
func hotB(d time.Duration) uint64 {
	x := uint64(d)
	end := threadCPU() + d
	for {
		for i := 0; i < 1<<18; i++ {
			x = x*6364136223846793005 + uint64(i)
		}
		if threadCPU() >= end {
			return x
		}
	}
}

// inlinedHot is small enough for the compiler to inline into outerLoop.
func inlinedHot(x uint64, i int) uint64 {
	return ((x*6364136223846793005+uint64(i))*2862933555777941757 + 3037000493) ^ (x >> 29) // INLINED-HOT-LINE
}

//go:noinline
func outerLoop(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = inlinedHot(x, i)
	}
	return x
}

// leafSpin needs no stack frame (no locals, no calls; arguments in registers), so
// the compiler gives it none and it does not push RBP.
//
//go:noinline
func leafSpin(x uint64, n int) uint64 {
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + uint64(i)
	}
	return x
}

//go:noinline
func leafCaller(x uint64) uint64 {
	for j := 0; j < 64; j++ {
		x = leafSpin(x, 1<<14)
	}
	return x
}

//go:noinline
func asmCaller(x uint64) uint64 {
	for j := 0; j < 64; j++ {
		x = spin.ClobberSpin(x, 1<<14)
	}
	return x
}

// workUnit is one unit of -mode work: a fixed number of iterations, so the
// units completed per second measure the CPU the program actually got.
//
//go:noinline
func workUnit(x uint64) uint64 {
	for i := 0; i < 1<<16; i++ {
		x = x*6364136223846793005 + uint64(i)
	}
	return x
}

// units counts completed work units (-mode work); with -report it points into
// the shared mapping of the report file.
var units = new(uint64)

// openReport maps the first 8 bytes of path (created or truncated to 8 bytes,
// zeroed) shared, and makes the units counter live there.
func openReport(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(8); err != nil {
		return err
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, 8, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return err
	}
	units = (*uint64)(unsafe.Pointer(&b[0]))
	return nil
}

// printUnits writes "units TOTAL RATE/s" once a second.
func printUnits() {
	last, t := atomic.LoadUint64(units), time.Now()
	for range time.Tick(time.Second) {
		n, now := atomic.LoadUint64(units), time.Now()
		fmt.Printf("units %d %.0f/s\n", n, float64(n-last)/now.Sub(t).Seconds())
		last, t = n, now
	}
}

func burn(mode string) {
	runtime.LockOSThread()
	const chunk = 20000
	for {
		switch mode {
		case "split":
			sink += hotA(60 * time.Millisecond)
			sink += hotB(20 * time.Millisecond)
		case "inline":
			sink += outerLoop(chunk)
		case "cgo":
			sink += cgoBurn(chunk)
		case "leaf":
			sink += leafCaller(sink)
		case "asm":
			sink += asmCaller(sink)
		case "work":
			x := workUnit(sink)
			atomic.AddUint64(units, 1)
			if x == 0 { // never: keeps the result live
				sink++
			}
		}
	}
}

func main() {
	mode := flag.String("mode", "split", "split, inline, cgo, leaf, asm or work")
	workers := flag.Int("workers", 1, "burning goroutines")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address")
	report := flag.String("report", "", "-mode work: keep the unit count in this file (8 bytes, shared mapping) instead of printing it")
	flag.Parse()
	if *mode == "cgo" && !cgoAvailable {
		fmt.Fprintln(os.Stderr, "cgo mode needs a cgo build")
		os.Exit(2)
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go http.Serve(ln, nil)
		fmt.Printf("pprof on %s\n", ln.Addr())
	}
	if *mode == "work" && *report != "" {
		if err := openReport(*report); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for i := 0; i < *workers; i++ {
		go burn(*mode)
	}
	fmt.Println("ready")
	if *mode == "work" && *report == "" {
		printUnits()
	}
	select {}
}
