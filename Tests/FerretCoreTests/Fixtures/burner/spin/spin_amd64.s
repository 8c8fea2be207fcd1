#include "textflag.h"

// func ClobberSpin(x uint64, n int) uint64
//
// The multiply-add loop of leafSpin, with RBP as the loop counter: hand-written
// assembly may use RBP for data (crypto/sha256's block keeps its constants'
// address there), and a frame-pointer walk from inside it reads garbage. The
// assembler saves and restores RBP around the body (the frame is 8 bytes), so the
// caller's RBP is intact again on return.
TEXT ·ClobberSpin(SB), NOSPLIT, $8-24
	MOVQ x+0(FP), AX
	MOVQ n+8(FP), BP
	MOVQ $6364136223846793005, R8
loop:
	IMULQ R8, AX
	ADDQ BP, AX
	DECQ BP
	JNZ loop
	MOVQ AX, ret+16(FP)
	RET
