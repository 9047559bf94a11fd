package storage

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/vigie-vms/vigie/model"
)

func sampleMetas() []segMeta {
	return []segMeta{
		{initLen: 700, initCRC: 0xdeadbeef, codecHash: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, blockSize: DefaultBlockSize},
		{initLen: 1, initCRC: 1, blockSize: MinBlockSize, sealed: true, end: 1741944413000000000, bytes: 1,
			fragments: 0, fileCRC: 7, blocks: []uint32{9}},
		{initLen: 700, blockSize: MinBlockSize, sealed: true, end: 1741944418000000000, bytes: 3 * MinBlockSize,
			fragments: 5, fileCRC: 0xffffffff, blocks: []uint32{1, 2, 3}},
	}
}

func sampleFrags() []fragRec {
	return []fragRec{
		{offset: 700, size: 250000, start: 1741944413000000000, duration: 1e9, keyframe: true, crc: 0x12345678},
		{offset: 1 << 39, size: 1, start: 1, duration: 0, crc: 0},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, m := range sampleMetas() {
		got, err := decodeMeta(encodeMeta(m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("decodeMeta(encodeMeta(%+v)) = %+v, %v", m, got, err)
		}
	}
	for _, f := range sampleFrags() {
		enc := encodeFrag(f)
		got, err := decodeFrag(enc)
		if err != nil || got != f {
			t.Errorf("decodeFrag(encodeFrag(%+v)) = %+v, %v", f, got, err)
		}
		if len(enc) > 32 {
			t.Errorf("fragment record is %d bytes, want compact (≤ 32)", len(enc))
		}
	}
	bad := map[string][]byte{
		"empty":        nil,
		"version":      append([]byte{2}, encodeMeta(sampleMetas()[0])[1:]...),
		"trailing":     append(encodeMeta(sampleMetas()[0]), 0),
		"truncated":    encodeMeta(sampleMetas()[2])[:20],
		"unknown flag": append([]byte{1, 0x80}, encodeMeta(sampleMetas()[0])[2:]...),
	}
	for name, b := range bad {
		if _, err := decodeMeta(b); !errors.Is(err, errBadRecord) {
			t.Errorf("decodeMeta(%s) = %v, want errBadRecord", name, err)
		}
	}
	// A sealed record whose block count does not match its size.
	m := sampleMetas()[2]
	m.blocks = m.blocks[:2]
	if _, err := decodeMeta(encodeMeta(m)); !errors.Is(err, errBadRecord) {
		t.Errorf("decodeMeta(wrong block count) = %v", err)
	}
	if _, err := decodeFrag(encodeFrag(sampleFrags()[0])[:10]); !errors.Is(err, errBadRecord) {
		t.Errorf("decodeFrag(truncated) = %v", err)
	}
}

// FuzzDecodeMeta: the segment record decoder parses bytes from disk; it must never panic
// and whatever it accepts must re-encode to the same bytes.
func FuzzDecodeMeta(f *testing.F) {
	for _, m := range sampleMetas() {
		f.Add(encodeMeta(m))
	}
	f.Add([]byte{1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("error does not wrap errBadRecord: %v", err)
			}
			return
		}
		if m.sealed && int64(len(m.blocks)) != numBlocks(m.bytes, m.blockSize) {
			t.Fatalf("accepted %d blocks for %d bytes", len(m.blocks), m.bytes)
		}
		if enc := encodeMeta(m); !bytes.Equal(enc, b) {
			// Varints have non-canonical forms (e.g. 0x80 0x00); the decoded value must
			// still round-trip.
			m2, err := decodeMeta(enc)
			if err != nil || !reflect.DeepEqual(m2, m) {
				t.Fatalf("re-encoding %x gives %x which decodes to %+v, %v", b, enc, m2, err)
			}
		}
	})
}

// FuzzDecodeFrag: the fragment record decoder parses bytes from disk.
func FuzzDecodeFrag(f *testing.F) {
	for _, r := range sampleFrags() {
		f.Add(encodeFrag(r))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeFrag(b)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("error does not wrap errBadRecord: %v", err)
			}
			return
		}
		if r.offset <= 0 || r.size <= 0 || r.size > MaxFragmentSize || r.start <= 0 || r.duration < 0 {
			t.Fatalf("accepted an impossible fragment %+v", r)
		}
		if r2, err := decodeFrag(encodeFrag(r)); err != nil || r2 != r {
			t.Fatalf("round trip of %+v gives %+v, %v", r, r2, err)
		}
	})
}

// FuzzParseSegmentID: segment ids come from file names and requests.
func FuzzParseSegmentID(f *testing.F) {
	f.Add("cam-1.182ca136e3576200.7")
	f.Add("a.0000000000000001.0")
	f.Add("cam.ffffffffffffffff.18446744073709551615")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := parseSegmentID(model.SegmentID(s))
		if err != nil {
			return
		}
		if string(k.id()) != s {
			t.Fatalf("accepted %q but it prints as %q", s, k.id())
		}
		k2, rest, err := parseSegKey(k.segmentKey()[1:])
		if err != nil || len(rest) != 0 || k2 != k {
			t.Fatalf("key of %q does not parse back: %+v %v", s, k2, err)
		}
	})
}
