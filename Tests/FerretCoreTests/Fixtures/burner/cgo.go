//go:build cgo

package main

// #include <stdint.h>
// __attribute__((noinline)) static uint64_t cburn(int n) {
//     uint64_t x = (uint64_t)n;
//     for (int i = 0; i < n; i++) { x = x * 6364136223846793005ULL + (uint64_t)i; __asm__ volatile("" : "+r"(x)); }
//     return x;
// }
import "C"

const cgoAvailable = true

func cgoBurn(n int) uint64 { return uint64(C.cburn(C.int(n))) }
