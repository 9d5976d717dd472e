//go:build wasip1

// Package job writes edgecloud map/reduce jobs in Go, compiled to WebAssembly:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o job.wasm .
//
// A job registers its functions in init and has an empty main:
//
//	func init() {
//		job.Map(func(record []byte, o job.Object) { job.Emit("lines", 1) })
//		job.Combine(job.Sum)
//		job.Reduce(job.Sum)
//	}
//	func main() {}
//
// The same host API as the Lua and JavaScript runtimes (docs/jobs.md): Map is called per
// record (a line, or a whole object), Emit(key, value) sends a value (any JSON), Log
// writes a log line (so does fmt.Println), Combine folds one task's values per key and
// Reduce the whole job's. A record is valid only during its Map call: copy what you keep.
package job

import (
	"encoding/json"
	"unsafe"
)

// Object is the input object a record comes from.
type Object struct {
	Key       string `json:"key"`
	VersionID string `json:"version_id"`
	Size      int64  `json:"size"`
}

// Values are the values emitted for one key, as JSON.
type Values = []json.RawMessage

var (
	mapFn     func(record []byte, object Object)
	combineFn func(key string, values Values) any
	reduceFn  func(key string, values Values) any
	object    *Object
	// Buffers handed to the host by alloc, kept alive while it may write into them.
	buffers = map[uintptr][]byte{}
)

// Map sets the function called for each record.
func Map(f func(record []byte, object Object)) { mapFn = f }

// Combine sets the function folding one task's values for a key.
func Combine(f func(key string, values Values) any) { combineFn = f }

// Reduce sets the function folding the whole job's values for a key.
func Reduce(f func(key string, values Values) any) { reduceFn = f }

// Emit sends value (anything encoding/json can encode) under key.
func Emit(key string, value any) {
	v, err := json.Marshal(value)
	if err != nil {
		panic("edgecloud: cannot encode the value for " + key + ": " + err.Error())
	}
	k := []byte(key)
	if len(k) == 0 {
		k = []byte{0}[:0:1]
	}
	emit(unsafe.Pointer(unsafe.SliceData(k)), int32(len(k)), unsafe.Pointer(unsafe.SliceData(v)), int32(len(v)))
}

// Log writes one log line.
func Log(line string) {
	b := []byte(line + " ")
	logLine(unsafe.Pointer(unsafe.SliceData(b)), int32(len(b)-1))
}

// Sum adds values that are numbers: a Combine and Reduce for counts.
func Sum(key string, values Values) any {
	var total float64
	for _, v := range values {
		var n float64
		if json.Unmarshal(v, &n) == nil {
			total += n
		}
	}
	return total
}

//go:wasmimport edgecloud emit
func emit(kp unsafe.Pointer, kl int32, vp unsafe.Pointer, vl int32)

//go:wasmimport edgecloud log
func logLine(p unsafe.Pointer, n int32)

//go:wasmimport edgecloud result
func result(p unsafe.Pointer, n int32)

//go:wasmimport edgecloud object
func objectInfo(p unsafe.Pointer, capacity int32) int32

//go:wasmexport alloc
func alloc(n int32) int32 {
	b := make([]byte, n)
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	buffers[p] = b
	return int32(p)
}

func bytesAt(p, n int32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(p))), n)
}

//go:wasmexport map
func mapRecord(p, n int32) {
	if mapFn == nil {
		panic("edgecloud: the job registered no Map function (call job.Map in init)")
	}
	if object == nil {
		buf := make([]byte, 4096)
		n := objectInfo(unsafe.Pointer(unsafe.SliceData(buf)), int32(len(buf)))
		if int(n) > len(buf) {
			buf = make([]byte, n)
			n = objectInfo(unsafe.Pointer(unsafe.SliceData(buf)), n)
		}
		object = &Object{}
		_ = json.Unmarshal(buf[:n], object)
	}
	mapFn(bytesAt(p, n), *object)
}

func fold(f func(string, Values) any, kp, kl, vp, vl int32) int32 {
	if f == nil {
		return 0
	}
	var values Values
	if err := json.Unmarshal(bytesAt(vp, vl), &values); err != nil {
		panic("edgecloud: the host passed values that are not JSON: " + err.Error())
	}
	out, err := json.Marshal(f(string(bytesAt(kp, kl)), values))
	if err != nil {
		panic("edgecloud: cannot encode the folded value: " + err.Error())
	}
	result(unsafe.Pointer(unsafe.SliceData(out)), int32(len(out)))
	return 1
}

//go:wasmexport combine
func combine(kp, kl, vp, vl int32) int32 { return fold(combineFn, kp, kl, vp, vl) }

//go:wasmexport reduce
func reduce(kp, kl, vp, vl int32) int32 { return fold(reduceFn, kp, kl, vp, vl) }
