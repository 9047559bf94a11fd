package ingest

import "encoding/binary"

// This file writes moof+mdat fragments directly into reused buffers. mediacommon's
// fmp4.Part.Marshal produces the same boxes but allocates the whole mdat and every box on
// each fragment; at thousands of cameras that garbage matters. The output is checked
// against fmp4.Parts.Unmarshal in the tests.

const (
	trunDataOffset   = 0x000001
	trunDuration     = 0x000100
	trunSize         = 0x000200
	trunFlags        = 0x000400
	trunCTO          = 0x000800
	tfhdDefaultBase  = 0x020000 // default-base-is-moof
	sampleNonSync    = 1 << 16  // sample_is_non_sync_sample
	sampleDependsYes = 1 << 24  // sample_depends_on = 1 (not an I picture)
	sampleDependsNo  = 2 << 24  // sample_depends_on = 2 (I picture)
)

// sampleMeta describes one sample of a track buffer; its bytes follow the previous
// sample's in trackBuf.data.
type sampleMeta struct {
	size     uint32
	duration uint32
	cto      int32 // composition time offset (PTS - DTS), in the track's timescale
	nonSync  bool
}

// trackBuf accumulates the samples of one track for the fragment being built.
type trackBuf struct {
	id        int
	timescale uint32
	isVideo   bool
	// data holds head reserved bytes, then the samples. The segmenter reserves room for
	// the fragment's moof and mdat headers in front of the video samples, so that a
	// fragment leaves as one slice of this buffer without its samples being copied.
	data    []byte
	head    int
	samples []sampleMeta
	// base is the decode time (tfdt) of the first sample in the buffer, in timescale
	// units since the init section started; next is base plus the buffered durations.
	base, next uint64
}

// payload returns the sample bytes.
func (t *trackBuf) payload() []byte { return t.data[t.head:] }

func (t *trackBuf) reset() {
	t.data = t.data[:t.head]
	t.samples = t.samples[:0]
	t.base = t.next
}

// setHead reserves n bytes in front of the samples; the buffer must hold no sample.
func (t *trackBuf) setHead(n int) {
	if cap(t.data) < n {
		t.data = make([]byte, n, n+64<<10)
	}
	t.data, t.head = t.data[:n], n
}

func (t *trackBuf) trunFlags() uint32 {
	f := uint32(trunDataOffset | trunDuration | trunSize | trunFlags)
	for _, s := range t.samples {
		if s.cto != 0 {
			f |= trunCTO
			break
		}
	}
	return f
}

func (t *trackBuf) trafSize() int {
	entry := 12
	if t.trunFlags()&trunCTO != 0 {
		entry = 16
	}
	// traf header 8, tfhd 16, tfdt 20, trun 20 + entries
	return 8 + 16 + 20 + 20 + entry*len(t.samples)
}

func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

func boxHeader(b []byte, size int, typ string) []byte {
	b = be32(b, uint32(size))
	return append(b, typ...)
}

// fragmentSizes returns the size of the moof box and of the mdat box of a fragment holding
// every non-empty track.
func fragmentSizes(tracks []*trackBuf) (moofSize, mdatSize int) {
	moofSize, mdatSize = 8+16, 8
	for _, t := range tracks {
		if len(t.samples) == 0 {
			continue
		}
		moofSize += t.trafSize()
		mdatSize += len(t.payload())
	}
	return moofSize, mdatSize
}

// appendFragment appends one moof+mdat holding every non-empty track to dst.
func appendFragment(dst []byte, seq uint32, tracks []*trackBuf) []byte {
	dst = appendFragmentHeader(dst, seq, tracks)
	for _, t := range tracks {
		if len(t.samples) != 0 {
			dst = append(dst, t.payload()...)
		}
	}
	return dst
}

// appendFragmentHeader appends the moof box and the mdat box header of a fragment holding
// every non-empty track: what precedes the tracks' samples, in track order.
func appendFragmentHeader(dst []byte, seq uint32, tracks []*trackBuf) []byte {
	moofSize, mdatSize := fragmentSizes(tracks)
	dst = boxHeader(dst, moofSize, "moof")
	dst = boxHeader(dst, 16, "mfhd")
	dst = be32(dst, 0)
	dst = be32(dst, seq)
	dataOffset := moofSize + 8
	for _, t := range tracks {
		if len(t.samples) == 0 {
			continue
		}
		dst = boxHeader(dst, t.trafSize(), "traf")
		dst = boxHeader(dst, 16, "tfhd")
		dst = be32(dst, tfhdDefaultBase) // version 0 + flags
		dst = be32(dst, uint32(t.id))
		dst = boxHeader(dst, 20, "tfdt")
		dst = be32(dst, 1<<24) // version 1
		dst = binary.BigEndian.AppendUint64(dst, t.base)
		flags := t.trunFlags()
		entry := 12
		if flags&trunCTO != 0 {
			entry = 16
		}
		dst = boxHeader(dst, 20+entry*len(t.samples), "trun")
		dst = be32(dst, 1<<24|flags) // version 1: signed composition offsets
		dst = be32(dst, uint32(len(t.samples)))
		dst = be32(dst, uint32(dataOffset))
		for _, s := range t.samples {
			dst = be32(dst, s.duration)
			dst = be32(dst, s.size)
			sf := uint32(0)
			if t.isVideo {
				if s.nonSync {
					sf = sampleNonSync | sampleDependsYes
				} else {
					sf = sampleDependsNo
				}
			}
			dst = be32(dst, sf)
			if flags&trunCTO != 0 {
				dst = be32(dst, uint32(s.cto))
			}
		}
		dataOffset += len(t.payload())
	}
	return boxHeader(dst, mdatSize, "mdat")
}
