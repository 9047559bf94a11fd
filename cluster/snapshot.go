package cluster

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type kv struct{ k, v []byte }

// writeSnapshot streams every key of r except the applied index (see Restore).
func writeSnapshot(w io.Writer, r pebble.Reader, applied uint64) error {
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	hdr := append([]byte(snapMagic), snapVersion)
	hdr = binary.BigEndian.AppendUint64(hdr, applied)
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	it, err := r.NewIter(&pebble.IterOptions{})
	if err != nil {
		return err
	}
	var scratch [2 * binary.MaxVarintLen64]byte
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if string(k) == string(keyApplied) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		n := binary.PutUvarint(scratch[:], uint64(len(k)))
		bw.Write(scratch[:n])
		bw.Write(k)
		n = binary.PutUvarint(scratch[:], uint64(len(v)))
		bw.Write(scratch[:n])
		if _, err := bw.Write(v); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return err
	}
	bw.WriteByte(0) // end of records
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

// crcReader hashes what is read through it.
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.crc.Write([]byte{b})
	}
	return b, err
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	return n, err
}

const maxSnapshotValue = 64 << 20

// readSnapshot parses a snapshot stream, handing records to apply in batches of ~4 MiB.
// It returns the applied index of the header. Bad bytes give an error, never a panic;
// the checksum is verified at the end (apply may have seen records by then: callers
// treat an error as "the store is unusable until a good restore").
func readSnapshot(r io.Reader, apply func([]kv) error) (uint64, error) {
	cr := &crcReader{r: bufio.NewReaderSize(r, 256<<10), crc: crc32.New(castagnoli)}
	hdr := make([]byte, len(snapMagic)+1+8)
	if _, err := io.ReadFull(cr, hdr); err != nil {
		return 0, fmt.Errorf("%w snapshot header: %v", errDecode, err)
	}
	if string(hdr[:len(snapMagic)]) != snapMagic {
		return 0, fmt.Errorf("%w snapshot: bad magic", errDecode)
	}
	if v := hdr[len(snapMagic)]; v != snapVersion {
		return 0, fmt.Errorf("%w snapshot: unknown version %d", errDecode, v)
	}
	applied := binary.BigEndian.Uint64(hdr[len(snapMagic)+1:])
	var batch []kv
	size := 0
	readLen := func(what string, max uint64) (int, error) {
		n, err := binary.ReadUvarint(cr)
		if err != nil {
			return 0, fmt.Errorf("%w snapshot %s length: %v", errDecode, what, err)
		}
		if n > max {
			return 0, fmt.Errorf("%w snapshot: %s length %d too large", errDecode, what, n)
		}
		return int(n), nil
	}
	for {
		kl, err := readLen("key", 1<<16)
		if err != nil {
			return 0, err
		}
		if kl == 0 {
			break
		}
		k := make([]byte, kl)
		if _, err := io.ReadFull(cr, k); err != nil {
			return 0, fmt.Errorf("%w snapshot key: %v", errDecode, err)
		}
		vl, err := readLen("value", maxSnapshotValue)
		if err != nil {
			return 0, err
		}
		v := make([]byte, vl)
		if _, err := io.ReadFull(cr, v); err != nil {
			return 0, fmt.Errorf("%w snapshot value: %v", errDecode, err)
		}
		batch = append(batch, kv{k, v})
		size += kl + vl
		if size >= 4<<20 {
			if err := apply(batch); err != nil {
				return 0, err
			}
			batch, size = batch[:0], 0
		}
	}
	want := cr.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return 0, fmt.Errorf("%w snapshot checksum: %v", errDecode, err)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return 0, fmt.Errorf("%w snapshot: checksum %08x, computed %08x", errDecode, got, want)
	}
	if len(batch) > 0 {
		if err := apply(batch); err != nil {
			return 0, err
		}
	}
	return applied, nil
}
