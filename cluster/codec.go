package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The encoding of commands (raft log entries) and of stored values (Pebble) is a small
// hand-rolled binary format: a version byte, then fields in a fixed order, integers as
// varints, strings and byte slices length-prefixed, times as a presence byte plus Unix
// nanoseconds. It was chosen over JSON and gob because the catalog's hot path (a day of
// 2-second segments is 43,200 values per camera) must decode in microseconds, because gob
// carries type descriptions per stream and is hard to make panic-free on hostile input,
// and because protobuf needs code generation we do not run here. Every decoder works on a
// bounds-checked reader with a sticky error, so bad bytes yield an error, never a panic.

// errDecode is wrapped by every decoding error.
var errDecode = errors.New("cluster: cannot decode")

// Limits that protect decoders from allocating on lying length prefixes.
const (
	maxListLen = 1 << 20
)

type encoder struct{ b []byte }

func (e *encoder) u8(v byte)           { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64)    { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)      { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)        { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte)      { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *encoder) boolean(v bool)      { e.u8(boolByte(v)) }
func (e *encoder) int(v int)           { e.varint(int64(v)) }
func (e *encoder) u32(v uint32)        { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *encoder) dur(d time.Duration) { e.varint(int64(d)) }

func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.u8(0)
		return
	}
	e.u8(1)
	e.varint(t.UnixNano())
}

func (e *encoder) strs(ss []string) {
	e.uvarint(uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// decoder reads what encoder wrote. The first error sticks; later reads return zero
// values, so a decode function checks d.err once at the end.
type decoder struct {
	b   []byte
	err error
	// ver is the layout version of the value being read (values only).
	ver byte
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errDecode, what)
	}
}

func (d *decoder) u8() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int {
	v := d.varint()
	if v > math.MaxInt32 || v < math.MinInt32 {
		d.fail("int out of range")
		return 0
	}
	return int(v)
}

func (d *decoder) u32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.fail("truncated uint32")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length beyond end")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.raw()) }

func (d *decoder) bytes() []byte {
	v := d.raw()
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) boolean() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("bad bool")
		return false
	}
}

func (d *decoder) dur() time.Duration { return time.Duration(d.varint()) }

func (d *decoder) time() time.Time {
	switch d.u8() {
	case 0:
		return time.Time{}
	case 1:
		return time.Unix(0, d.varint()).UTC()
	default:
		d.fail("bad time")
		return time.Time{}
	}
}

// listLen reads a list length and checks it against the bytes left (each element takes at
// least minElem bytes), so a lying prefix cannot make us allocate gigabytes.
func (d *decoder) listLen(minElem int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > maxListLen || n*uint64(minElem) > uint64(len(d.b)) {
		d.fail("list length beyond end")
		return 0
	}
	return int(n)
}

func (d *decoder) strs() []string {
	n := d.listLen(1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.str()
	}
	return ss
}

// end reports an error when bytes are left over or an earlier read failed.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// validTime bounds the times the catalog accepts to what UnixNano represents.
func validTime(t time.Time) bool {
	return t.IsZero() || (t.Year() >= 1970 && t.Year() < 2200)
}
