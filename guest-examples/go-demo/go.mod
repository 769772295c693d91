// The module name is the one wit-bindgen's Go bindings import themselves by.
module wit_component

go 1.25

require go.bytecodealliance.org/pkg v0.4.0

replace go.bytecodealliance.org/pkg => ./witpkg
