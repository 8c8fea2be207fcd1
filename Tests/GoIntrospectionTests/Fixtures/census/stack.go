package main

import "runtime"

var runtimeStackFn = runtime.Stack
