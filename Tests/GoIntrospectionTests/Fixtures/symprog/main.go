// symprog prints, for return addresses taken inside a chain of inlined
// calls, what Go's own runtime.CallersFrames says about each one. The
// introspection tests symbolize the same addresses from the binary file and
// must agree frame by frame (function, file, line).
//
// Output: per captured stack a line "STACK", then one line per PC,
// "PC <hex return address> <function>\t<file>\t<line>".
package main

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
)

//go:noinline
func leaf() []uintptr {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(1, pcs)
	return pcs[:n]
}

func inlinedMiddle() []uintptr { return leaf() }

func inlinedOuter() []uintptr {
	return inlinedMiddle()
}

//go:noinline
func top() []uintptr { return inlinedOuter() }

type sorter struct{ s []string }

func (s *sorter) Len() int           { return len(s.s) }
func (s *sorter) Less(i, j int) bool { return s.s[i] < s.s[j] }
func (s *sorter) Swap(i, j int) {
	s.s[i], s.s[j] = s.s[j], s.s[i]
	if captured == nil {
		captured = callers()
	}
}

var captured []uintptr

//go:noinline
func callers() []uintptr {
	pcs := make([]uintptr, 32)
	n := runtime.Callers(2, pcs)
	return pcs[:n]
}

func main() {
	stacks := [][]uintptr{top()}
	// Library code with inlining of its own (sort, strings).
	sort.Sort(&sorter{s: strings.Fields("d c b a")})
	stacks = append(stacks, captured)
	for _, pcs := range stacks {
		// runtime.Callers gives one PC per logical frame: an inlined call's
		// callers appear as extra PCs after it. Print each PC's single frame.
		fmt.Println("STACK")
		for _, pc := range pcs {
			f, _ := runtime.CallersFrames([]uintptr{pc}).Next()
			fmt.Printf("PC %x %s\t%s\t%d\n", pc, f.Function, f.File, f.Line)
		}
	}
}
