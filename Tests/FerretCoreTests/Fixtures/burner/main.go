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
	"syscall"
	"time"
	"unsafe"
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
		}
	}
}

func main() {
	mode := flag.String("mode", "split", "split, inline or cgo")
	workers := flag.Int("workers", 1, "burning goroutines")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address")
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
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for i := 0; i < *workers; i++ {
		go burn(*mode)
	}
	fmt.Println("ready")
	select {}
}
