// Stands in for go.bytecodealliance.org/pkg v0.4.0, the support package the
// Go bindings of wit-bindgen 0.63 import, for the one part of it they call.
// The Go module proxy is not reachable from every machine this builds on; a
// project that can reach it drops the `replace` line in ../go.mod instead.
module go.bytecodealliance.org/pkg

go 1.25
