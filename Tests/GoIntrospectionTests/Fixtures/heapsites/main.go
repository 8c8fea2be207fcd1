// heapsites: a Go program whose heap profile is known, for the heap-profile
// truth tests (issue #20). It churns 256 MiB of garbage at churnC, then retains
// 48 MiB at retainA and 16 MiB at retainB (512-byte objects: a 3:1 split),
// prints "ready <pid>", and serves commands on stdin:
//   "dump DIR" runs two GCs (publishing the profile), writes DIR/heap.pb.gz
//   (runtime/pprof's heap profile) and prints "dumped".
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
)

var keepA, keepB [][]byte
var sink []byte

//go:noinline
func churnC(total int) {
	for i := 0; i < total/4096; i++ {
		sink = make([]byte, 4096)
	}
	sink = nil
}

//go:noinline
func retainA(total int) {
	for i := 0; i < total/512; i++ {
		keepA = append(keepA, make([]byte, 512))
	}
}

//go:noinline
func retainB(total int) {
	for i := 0; i < total/512; i++ {
		keepB = append(keepB, make([]byte, 512))
	}
}

func main() {
	churnC(256 << 20)
	retainA(48 << 20)
	retainB(16 << 20)
	runtime.GC()
	runtime.GC()
	fmt.Printf("ready %d\n", os.Getpid())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 2 && f[0] == "dump" {
			runtime.GC()
			runtime.GC()
			out, err := os.Create(filepath.Join(f[1], "heap.pb.gz"))
			if err != nil {
				panic(err)
			}
			pprof.Lookup("heap").WriteTo(out, 0)
			out.Close()
			fmt.Println("dumped")
		}
	}
	runtime.KeepAlive(keepA)
	runtime.KeepAlive(keepB)
}
