package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// castagnoli is the CRC-32C table used for every checksum of the store.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// errBadRecord is wrapped by the record decoders: the index holds bytes this version of the
// store did not write.
var errBadRecord = errors.New("malformed index record")

const recordVersion = 1

// Bounds the decoders enforce, so that a corrupt record cannot make the store allocate or
// seek absurdly.
const (
	maxFileSize  = 1 << 40
	maxDuration  = int64(24 * time.Hour)
	flagSealed   = 1
	flagKeyframe = 1
)

// segMeta is the value of a segment record.
type segMeta struct {
	initLen   int64
	initCRC   uint32
	codecHash [8]byte
	blockSize int64
	sealed    bool
	// Set when sealed.
	end       int64 // Unix ns of the end of the last fragment
	bytes     int64 // file size
	fragments int
	fileCRC   uint32
	blocks    []uint32 // CRC-32C of each blockSize block of the file, the last one partial
}

// numBlocks is the number of blockSize blocks that cover size bytes.
func numBlocks(size, blockSize int64) int64 {
	return (size + blockSize - 1) / blockSize
}

// encodeMeta encodes a segment record:
//
//	version u8 | flags u8 | initLen uvarint | initCRC u32 | codecHash [8] | blockSize uvarint
//	sealed only: end i64 | bytes uvarint | fragments uvarint | fileCRC u32 | nblocks uvarint | nblocks × u32
func encodeMeta(m segMeta) []byte {
	b := make([]byte, 0, 40+4*len(m.blocks))
	var flags byte
	if m.sealed {
		flags |= flagSealed
	}
	b = append(b, recordVersion, flags)
	b = binary.AppendUvarint(b, uint64(m.initLen))
	b = binary.BigEndian.AppendUint32(b, m.initCRC)
	b = append(b, m.codecHash[:]...)
	b = binary.AppendUvarint(b, uint64(m.blockSize))
	if m.sealed {
		b = binary.BigEndian.AppendUint64(b, uint64(m.end))
		b = binary.AppendUvarint(b, uint64(m.bytes))
		b = binary.AppendUvarint(b, uint64(m.fragments))
		b = binary.BigEndian.AppendUint32(b, m.fileCRC)
		b = binary.AppendUvarint(b, uint64(len(m.blocks)))
		for _, c := range m.blocks {
			b = binary.BigEndian.AppendUint32(b, c)
		}
	}
	return b
}

// recReader reads the fields of a record, remembering the first error.
type recReader struct {
	b   []byte
	err error
}

func (r *recReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errBadRecord, fmt.Sprintf(format, args...))
	}
}

func (r *recReader) u8(field string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail("%s: truncated", field)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *recReader) u32(field string) uint32 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 4 {
		r.fail("%s: truncated", field)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *recReader) u64(field string) uint64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail("%s: truncated", field)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// uvarint reads an unsigned varint that must be within [lo, hi].
func (r *recReader) uvarint(field string, lo, hi int64) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("%s: bad varint", field)
		return 0
	}
	r.b = r.b[n:]
	if v < uint64(lo) || v > uint64(hi) {
		r.fail("%s: %d out of range [%d, %d]", field, v, lo, hi)
		return 0
	}
	return int64(v)
}

func (r *recReader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

// decodeMeta decodes a segment record; it checks the record is self-consistent and never
// panics on arbitrary input (FuzzDecodeMeta).
func decodeMeta(b []byte) (segMeta, error) {
	r := recReader{b: b}
	var m segMeta
	if v := r.u8("version"); r.err == nil && v != recordVersion {
		r.fail("version %d, want %d", v, recordVersion)
	}
	flags := r.u8("flags")
	if r.err == nil && flags&^flagSealed != 0 {
		r.fail("unknown flags %#x", flags)
	}
	m.sealed = flags&flagSealed != 0
	m.initLen = r.uvarint("init length", 1, MaxFragmentSize)
	m.initCRC = r.u32("init crc")
	if r.err == nil {
		if len(r.b) < 8 {
			r.fail("codec hash: truncated")
		} else {
			copy(m.codecHash[:], r.b)
			r.b = r.b[8:]
		}
	}
	m.blockSize = r.uvarint("block size", MinBlockSize, MaxBlockSize)
	if m.sealed {
		m.end = int64(r.u64("end"))
		m.bytes = r.uvarint("bytes", 1, maxFileSize)
		m.fragments = int(r.uvarint("fragments", 0, maxFileSize))
		m.fileCRC = r.u32("file crc")
		n := r.uvarint("blocks", 0, maxFileSize)
		if r.err == nil {
			switch {
			case m.bytes < m.initLen:
				r.fail("bytes %d < init length %d", m.bytes, m.initLen)
			case int64(m.fragments) > m.bytes-m.initLen:
				r.fail("%d fragments in %d bytes", m.fragments, m.bytes-m.initLen)
			case n != numBlocks(m.bytes, m.blockSize):
				r.fail("%d blocks for %d bytes of %d-byte blocks", n, m.bytes, m.blockSize)
			case int64(len(r.b)) != 4*n:
				r.fail("blocks: %d bytes for %d checksums", len(r.b), n)
			}
		}
		if r.err == nil {
			m.blocks = make([]uint32, n)
			for i := range m.blocks {
				m.blocks[i] = r.u32("block crc")
			}
		}
	}
	if err := r.done(); err != nil {
		return segMeta{}, err
	}
	return m, nil
}

// fragRec is the value of a fragment record: where a fragment lives and its checksum.
type fragRec struct {
	offset   int64
	size     int64
	start    int64 // Unix ns
	duration int64 // ns
	keyframe bool
	crc      uint32
}

func (f fragRec) end() int64 { return f.offset + f.size }

func (f fragRec) info() model.FragmentInfo {
	return model.FragmentInfo{
		Offset:   f.offset,
		Size:     f.size,
		Start:    time.Unix(0, f.start).UTC(),
		Duration: time.Duration(f.duration),
		Keyframe: f.keyframe,
	}
}

// encodeFrag encodes a fragment record:
//
//	version u8 | flags u8 | offset uvarint | size uvarint | start i64 | duration uvarint | crc u32
func encodeFrag(f fragRec) []byte {
	b := make([]byte, 0, 32)
	var flags byte
	if f.keyframe {
		flags |= flagKeyframe
	}
	b = append(b, recordVersion, flags)
	b = binary.AppendUvarint(b, uint64(f.offset))
	b = binary.AppendUvarint(b, uint64(f.size))
	b = binary.BigEndian.AppendUint64(b, uint64(f.start))
	b = binary.AppendUvarint(b, uint64(f.duration))
	return binary.BigEndian.AppendUint32(b, f.crc)
}

// decodeFrag decodes a fragment record; it never panics on arbitrary input
// (FuzzDecodeFrag).
func decodeFrag(b []byte) (fragRec, error) {
	r := recReader{b: b}
	var f fragRec
	if v := r.u8("version"); r.err == nil && v != recordVersion {
		r.fail("version %d, want %d", v, recordVersion)
	}
	flags := r.u8("flags")
	if r.err == nil && flags&^flagKeyframe != 0 {
		r.fail("unknown flags %#x", flags)
	}
	f.keyframe = flags&flagKeyframe != 0
	f.offset = r.uvarint("offset", 1, maxFileSize)
	f.size = r.uvarint("size", 1, MaxFragmentSize)
	f.start = int64(r.u64("start"))
	f.duration = r.uvarint("duration", 0, maxDuration)
	f.crc = r.u32("crc")
	if r.err == nil && f.start <= 0 {
		r.fail("start %d before 1970", f.start)
	}
	if err := r.done(); err != nil {
		return fragRec{}, err
	}
	return f, nil
}
