// Package wit_types holds the generic WIT types of the bindings: option,
// result, tuple and the unit type.
package wit_types

const (
	OptionNone = 0
	OptionSome = 1
)

// Option is WIT's option<T>.
type Option[T any] struct {
	tag   uint8
	value T
}

func (o Option[T]) Tag() uint8   { return o.tag }
func (o Option[T]) IsSome() bool { return o.tag == OptionSome }
func (o Option[T]) IsNone() bool { return o.tag == OptionNone }

// Some returns the value, which must be there.
func (o Option[T]) Some() T {
	if o.tag != OptionSome {
		panic("wit: option is none")
	}
	return o.value
}

// SomeOr returns the value, or fallback when there is none.
func (o Option[T]) SomeOr(fallback T) T {
	if o.tag != OptionSome {
		return fallback
	}
	return o.value
}

func None[T any]() Option[T]        { return Option[T]{tag: OptionNone} }
func Some[T any](value T) Option[T] { return Option[T]{tag: OptionSome, value: value} }

const (
	ResultOk  = 0
	ResultErr = 1
)

// Result is WIT's result<T, E>.
type Result[T any, E any] struct {
	tag   uint8
	value any
}

func (r Result[T, E]) Tag() uint8  { return r.tag }
func (r Result[T, E]) IsOk() bool  { return r.tag == ResultOk }
func (r Result[T, E]) IsErr() bool { return r.tag == ResultErr }

// Ok returns the success value, which must be there.
func (r Result[T, E]) Ok() T {
	if r.tag != ResultOk {
		panic("wit: result is an error")
	}
	return r.value.(T)
}

// Err returns the error value, which must be there.
func (r Result[T, E]) Err() E {
	if r.tag != ResultErr {
		panic("wit: result is not an error")
	}
	return r.value.(E)
}

func Ok[T any, E any](value T) Result[T, E]  { return Result[T, E]{tag: ResultOk, value: value} }
func Err[T any, E any](value E) Result[T, E] { return Result[T, E]{tag: ResultErr, value: value} }

// Tuple2 is WIT's tuple<A, B>, the only arity wasi:http 0.2 uses.
type Tuple2[T0 any, T1 any] struct {
	F0 T0
	F1 T1
}

// Unit is WIT's empty type, as in result<_, E>.
type Unit struct{}
