package storage

import "hash/crc32"

// This file keeps a segment's sealed checksums (per block and whole file) up to date as
// fragments are appended, from each fragment's own CRC-32C, so that sealing a segment this
// process wrote reads none of it back. Before, every seal read the whole file twice (the
// fragments' checksums, then the blocks'): with footage dropped from the page cache once
// durable, that was every recorded byte read from disk again, hundreds of segments at a
// time when cameras started together.

// crc32cCombine returns the CRC-32C of A‖B from crcA = CRC-32C(A), crcB = CRC-32C(B) and
// lenB = len(B), without the bytes (zlib's crc32_combine, for the Castagnoli polynomial).
func crc32cCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	return gfMulMod(xPow8nMod(lenB), crcA) ^ crcB
}

// gfMulMod returns a·b modulo the CRC-32C polynomial, in the reflected bit order the CRC
// uses (bit 31 is x^0).
func gfMulMod(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		if b&1 != 0 {
			b = b>>1 ^ crc32.Castagnoli
		} else {
			b >>= 1
		}
	}
	return p
}

// x2nTable[k] is x^(2^k) modulo the polynomial.
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = gfMulMod(p, p)
	}
	return t
}()

// xPow8nMod returns x^(8n) modulo the polynomial: the operator that appends n zero bytes.
func xPow8nMod(n int64) uint32 {
	p := uint32(1) << 31 // x^0
	for k := 3; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = gfMulMod(x2nTable[k&31], p)
		}
	}
	return p
}

// runningSums are the checksums of a segment file's first size bytes as a sealed segment
// records them: the CRC-32C of each whole block of blockSize bytes, of the partial block
// after them, and of all the bytes.
type runningSums struct {
	blockSize int64
	blocks    []uint32 // whole blocks
	cur       uint32   // the partial block
	curLen    int64
	whole     uint32
	size      int64
}

// add returns the sums after data is appended, and data's own CRC-32C; r is unchanged
// (the caller keeps the result once the bytes are durable). The bytes are read once.
func (r runningSums) add(data []byte) (runningSums, uint32) {
	var dataCRC uint32
	for rest := data; len(rest) > 0; {
		piece := rest[:min(int64(len(rest)), r.blockSize-r.curLen)]
		rest = rest[len(piece):]
		c := crc32c(piece)
		dataCRC = crc32cCombine(dataCRC, c, int64(len(piece)))
		r.cur = crc32cCombine(r.cur, c, int64(len(piece)))
		r.curLen += int64(len(piece))
		if r.curLen == r.blockSize {
			// Appends are serialised and only a committed result's length counts, so an
			// uncommitted result writing past the committed length harms nothing.
			r.blocks = append(r.blocks, r.cur)
			r.cur, r.curLen = 0, 0
		}
	}
	r.whole = crc32cCombine(r.whole, dataCRC, int64(len(data)))
	r.size += int64(len(data))
	return r, dataCRC
}

// final returns the per-block checksums (the partial block last) and the whole-file one.
func (r runningSums) final() ([]uint32, uint32) {
	blocks := append(make([]uint32, 0, len(r.blocks)+1), r.blocks...)
	if r.curLen > 0 {
		blocks = append(blocks, r.cur)
	}
	return blocks, r.whole
}
