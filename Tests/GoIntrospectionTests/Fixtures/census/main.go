// census: a Go program with known groups of goroutines, for the goroutine
// census truth tests. It starts:
//   - 50 goroutines blocked on a channel receive, created by spawnA;
//   - 30 in time.Sleep, created by spawnB;
//   - 20 blocked in sync.Mutex.Lock, created by spawnC;
//   - 10 in a select, created by spawnD;
//   - 3 in a blocking read(2) on a pipe (syscall state), created by spawnE;
//   - 1 parked 50 frames deep (deep -> deep -> ... -> chan receive);
//   - 1 busy goroutine that never parks;
//   - the finalizer goroutine, blocked in a finalizer (main.blockFinalizer's
//     closure, on a channel receive): while it runs user code Go counts it.
// Then it prints "ready <goid of main> <pid>" and serves commands on stdin:
//   "dump DIR" writes DIR/debug0.pb.gz, DIR/debug1.txt and DIR/debug2.txt
//   (runtime/pprof's own goroutine profile at debug=0, 1 and 2) and prints "dumped";
//   "churn N" starts N goroutines a second that end at once (until "stop");
//   "park N" starts N more goroutines parked 8 frames deep on a channel
//   receive (created by parkN), and prints "parked" when all are.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	block   = make(chan int)
	mu      sync.Mutex
	selectA = make(chan int)
	selectB = make(chan string)
	sink    int
)

//go:noinline
func waitA(i int) { sink += <-block + i }

//go:noinline
func spawnA() {
	for i := 0; i < 50; i++ {
		go waitA(i)
	}
}

//go:noinline
func sleepB() { time.Sleep(time.Hour) }

//go:noinline
func spawnB() {
	for i := 0; i < 30; i++ {
		go sleepB()
	}
}

//go:noinline
func lockC() {
	mu.Lock()
	sink++
	mu.Unlock()
}

//go:noinline
func spawnC() {
	for i := 0; i < 20; i++ {
		go lockC()
	}
}

//go:noinline
func selectD() {
	select {
	case v := <-selectA:
		sink += v
	case s := <-selectB:
		sink += len(s)
	}
}

//go:noinline
func spawnD() {
	for i := 0; i < 10; i++ {
		go selectD()
	}
}

//go:noinline
func readE(fd int) {
	buf := make([]byte, 1)
	syscall.Read(fd, buf) // a blocking fd: the goroutine stays in the syscall
}

//go:noinline
func spawnE() {
	for i := 0; i < 3; i++ {
		var p [2]int
		if err := syscall.Pipe(p[:]); err != nil {
			panic(err)
		}
		go readE(p[0])
	}
}

//go:noinline
func deep(n int) int {
	if n == 0 {
		return <-block
	}
	return deep(n-1) + 1
}

//go:noinline
func busy() {
	x := 0
	for {
		x++
		if x%1000000 == 0 {
			sink = x
		}
	}
}

type finObj struct{ b [64]byte }

var (
	finBlock   = make(chan int)
	finRunning int32
)

// blockFinalizer leaves the finalizer goroutine blocked in a finalizer.
//
//go:noinline
func blockFinalizer() {
	o := &finObj{}
	runtime.SetFinalizer(o, func(*finObj) {
		atomic.StoreInt32(&finRunning, 1)
		sink += <-finBlock
	})
	o = nil
	for i := 0; i < 500 && atomic.LoadInt32(&finRunning) == 0; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if atomic.LoadInt32(&finRunning) == 0 {
		panic("the finalizer did not run")
	}
}

//go:noinline
func churnOne() { sink++ }

var parkedWG sync.WaitGroup

//go:noinline
func parkDepth(n int, ch chan int) int {
	if n == 0 {
		parkedWG.Done()
		return <-ch
	}
	return parkDepth(n-1, ch) + 1
}

//go:noinline
func parkN(n int) {
	parkedWG.Add(n)
	ch := make(chan int)
	for i := 0; i < n; i++ {
		go parkDepth(8, ch)
	}
	parkedWG.Wait()
}

func churn(perSecond int, stop chan struct{}) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			for i := 0; i < perSecond/100; i++ {
				go churnOne()
			}
		}
	}
}

func goid() string {
	buf := make([]byte, 64)
	buf = buf[:runtimeStack(buf)]
	f := strings.Fields(string(buf))
	return f[1]
}

func dump(dir string) {
	for _, d := range []int{0, 1, 2} {
		name := fmt.Sprintf("debug%d.txt", d)
		if d == 0 {
			name = "debug0.pb.gz"
		}
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			panic(err)
		}
		pprof.Lookup("goroutine").WriteTo(f, d)
		f.Close()
	}
}

func main() {
	_ = net.IPv4len // links net (cgo in a plain build)
	mu.Lock()
	spawnA()
	spawnB()
	spawnC()
	spawnD()
	spawnE()
	go deep(50)
	go busy()
	blockFinalizer()
	time.Sleep(200 * time.Millisecond) // everyone reaches its wait
	fmt.Printf("ready %s %d\n", goid(), os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	var stop chan struct{}
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "dump":
			dump(f[1])
			fmt.Println("dumped")
		case len(f) == 2 && f[0] == "churn":
			n, _ := strconv.Atoi(f[1])
			stop = make(chan struct{})
			go churn(n, stop)
			fmt.Println("churning")
		case len(f) == 2 && f[0] == "park":
			n, _ := strconv.Atoi(f[1])
			parkN(n)
			time.Sleep(100 * time.Millisecond)
			fmt.Println("parked")
		case len(f) == 1 && f[0] == "stop" && stop != nil:
			close(stop)
			stop = nil
			fmt.Println("stopped")
		}
	}
}

func runtimeStack(buf []byte) int { return runtimeStackFn(buf, false) }
