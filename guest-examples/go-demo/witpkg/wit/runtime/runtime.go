// Package runtime holds what the generated bindings need at run time:
// resource handles, memory the host writes into, and cabi_realloc.
package runtime

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Handle is a resource handle the guest owns or borrows; 0 is never valid.
type Handle struct {
	value int32
}

// Use returns the handle, still owned.
func (h *Handle) Use() int32 {
	if h.value == 0 {
		panic("wit: use of a resource already moved or dropped")
	}
	return h.value
}

// Take returns the handle and gives up ownership of it.
func (h *Handle) Take() int32 {
	value := h.Use()
	h.value = 0
	return value
}

// TakeOrNil is Take for a handle that may be empty.
func (h *Handle) TakeOrNil() int32 {
	value := h.value
	h.value = 0
	return value
}

// Set gives an empty handle a value.
func (h *Handle) Set(value int32) {
	if value == 0 {
		panic("wit: a resource handle is never 0")
	}
	if h.value != 0 {
		panic("wit: handle already holds a resource")
	}
	h.value = value
}

// MakeHandle wraps a handle the host gave.
func MakeHandle(value int32) *Handle {
	handle := &Handle{}
	handle.Set(value)
	return handle
}

// Allocate returns zeroed memory of size bytes at align, pinned so that the
// garbage collector neither moves nor frees it while the host holds it.
func Allocate(pinner *runtime.Pinner, size, align uintptr) unsafe.Pointer {
	if size == 0 {
		return nil
	}
	if size%align != 0 {
		panic(fmt.Sprintf("wit: size %d is not a multiple of alignment %d", size, align))
	}
	var pointer unsafe.Pointer
	// Typed by alignment, so the allocation is aligned as the host expects.
	switch align {
	case 1:
		pointer = unsafe.Pointer(unsafe.SliceData(make([]uint8, size)))
	case 2:
		pointer = unsafe.Pointer(unsafe.SliceData(make([]uint16, size/2)))
	case 4:
		pointer = unsafe.Pointer(unsafe.SliceData(make([]uint32, size/4)))
	case 8:
		pointer = unsafe.Pointer(unsafe.SliceData(make([]uint64, size/8)))
	default:
		panic(fmt.Sprintf("wit: unsupported alignment %d", align))
	}
	pinner.Pin(pointer)
	return pointer
}

// The host calls cabi_realloc to write the strings and lists it returns.
// It may do so before the Go runtime has run its initialisers, when there
// is no heap yet, only sbrk (linked by name: build.sh passes
// -checklinkname=0, as the Go linker refuses runtime internals otherwise).
// After that it must still not allocate from the heap: an allocation may
// start a collection, which reads the clock through an import, and the
// component model forbids calling out while the host is lowering a value
// into the guest (wasmtime traps: "cannot leave component instance"). So it
// hands out pieces of a chunk allocated beforehand. The bindings keep
// pointers into those pieces (their strings alias the memory), and the
// collector keeps a chunk alive while any piece of it is referenced.
//
//go:linkname sbrk runtime.sbrk
func sbrk(n uintptr) unsafe.Pointer

const chunkSize = 64 << 10

var (
	initialised = false
	chunk       []byte
	used        uintptr
	// What did not fit in the chunk since the last Release, taken from sbrk.
	overflow uintptr
)

func init() {
	chunk = make([]byte, chunkSize)
	initialised = true
}

func alignUp(n, align uintptr) uintptr {
	return (n + align - 1) &^ (align - 1)
}

//go:wasmexport cabi_realloc
func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uintptr) unsafe.Pointer {
	if old != nil || oldSize != 0 {
		panic("wit: cabi_realloc cannot grow an allocation")
	}
	if newSize == 0 {
		return nil
	}
	if initialised {
		base := uintptr(unsafe.Pointer(unsafe.SliceData(chunk)))
		start := alignUp(base+used, align) - base
		if start+newSize <= uintptr(len(chunk)) {
			used = start + newSize
			return unsafe.Pointer(&chunk[start])
		}
		overflow += newSize + align
	}
	raw := uintptr(sbrk(newSize + align))
	return unsafe.Pointer(alignUp(raw, align))
}

// Release starts a new chunk when the current one is half used, or was too
// small: call it where no call into the host is under way (the end of a
// request), so that a reused instance neither runs out nor keeps every
// request's memory. The old chunk goes when nothing points into it.
func Release() {
	if used <= uintptr(len(chunk))/2 && overflow == 0 {
		return
	}
	size := uintptr(chunkSize)
	if wanted := 2 * (used + overflow); wanted > size {
		size = wanted
	}
	chunk = make([]byte, size)
	used = 0
	overflow = 0
}
