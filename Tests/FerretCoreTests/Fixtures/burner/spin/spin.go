// Package spin holds the burner's assembly (a package using cgo cannot hold Go
// assembly, and the burner's main package uses cgo in cgo builds).
package spin

// ClobberSpin is in spin_amd64.s.
func ClobberSpin(x uint64, n int) uint64
