package depack

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/pion/rtp"
)

// maxRetainedBuffer is the capacity above which an access-unit buffer is dropped, instead
// of kept for reuse, once the access unit it held has expired.
const maxRetainedBuffer = 4 << 20

// Errors without a gortsplib sentinel. They are values, not fmt.Errorf results, so that a
// lossy or hostile stream does not allocate per packet.
var (
	errH264TooShort      = errors.New("H.264 RTP: empty payload")
	errH265TooShort      = errors.New("H.265 RTP: payload is too short")
	errFUATooShort       = errors.New("H.264 RTP: invalid FU-A packet (shorter than 2 bytes)")
	errFUANonStarting    = errors.New("H.264 RTP: invalid FU-A packet (non-starting fragment without a starting one)")
	errSTAPASize         = errors.New("H.264 RTP: invalid STAP-A packet (NAL unit size does not match the payload)")
	errSTAPAEmpty        = errors.New("H.264 RTP: STAP-A packet doesn't contain any NAL unit")
	errH264PacketLost    = errors.New("H.264 RTP: discarding NAL unit since an RTP packet of its fragments is missing")
	errH265FUStartAndEnd = errors.New("H.265 RTP: invalid fragmentation unit (both start and end bits set)")
	errH265FUNonStarting = errors.New("H.265 RTP: invalid fragmentation unit (non-starting fragment without a starting one)")
	errH265AUSize        = errors.New("H.265 RTP: invalid aggregation unit (NAL unit size does not match the payload)")
	errH265PACI          = errors.New("H.265 RTP: PACI packets are not supported")
	errH265PacketLost    = errors.New("H.265 RTP: discarding NAL unit since an RTP packet of its fragments is missing")
)

var startCode4 = []byte{0x00, 0x00, 0x00, 0x01}

// span is a NAL unit: data[start:end] of an access-unit buffer.
type span struct{ start, end int }

// auBuffer holds the bytes of one access unit (plus, at its tail, a fragment or the NAL
// units of the packet being decoded) and the NAL units committed to it.
type auBuffer struct {
	data  []byte
	nalus []span
	out   [][]byte // the last result built from this buffer
}

// clear empties b for reuse, dropping its byte buffer when it grew too large.
func (b *auBuffer) clear() {
	if cap(b.data) > maxRetainedBuffer {
		b.data = nil
	} else {
		b.data = b.data[:0]
	}
	b.nalus = b.nalus[:0]
}

// result returns the committed NAL units as capped sub-slices of b.data, or nil when there
// are none (gortsplib then returns a nil access unit too).
func (b *auBuffer) result() [][]byte {
	if len(b.nalus) == 0 {
		return nil
	}
	b.out = b.out[:0]
	for _, s := range b.nalus {
		b.out = append(b.out, b.data[s.start:s.end:s.end])
	}
	return b.out
}

// Decoder turns RTP packets of one H.264 or H.265 track into access units.
// The zero value is an H.264 decoder (packetization mode 0 or 1).
type Decoder struct {
	h265 bool

	// bufs[cur] holds the access unit being filled; the other buffer holds the access unit
	// returned last (valid until the next Decode), so it is free once Decode is called.
	bufs   [2]auBuffer
	cur    int
	auSize int    // bytes of NAL units committed to bufs[cur] (gortsplib's frameBufferSize)
	auTS   uint32 // H.264: timestamp of the last packet committed (frameBufferTimestamp)
	retTS  uint32 // timestamp of the access unit returned last (Timestamp)

	firstPacketReceived bool
	annexBMode          bool // H.264: NAL units are wrapped in Annex-B, for good

	// fragmented NAL unit being reassembled: bufs[fragBuf].data[fragStart:], fragSize bytes.
	fragSize    int // 0: none (gortsplib's fragmentsSize)
	fragBuf     int
	fragStart   int
	fragNextSeq uint16

	// NAL units decoded from the packet being handled: bufs[stagedBuf].data[stagedStart:].
	stagedBuf   int
	stagedStart int
	staged      []span // at most maxNALUs()+1 are stored; stagedCount counts them all
	stagedCount int
	stagedSize  int
}

// NewH264 returns a decoder for an H.264 track. packetizationMode >= 2 (interleaved) is
// not supported, like rtph264.Decoder.Init.
func NewH264(packetizationMode int) (*Decoder, error) {
	if packetizationMode >= 2 {
		return nil, fmt.Errorf("H.264 RTP: packetization mode %d is not supported (only 0 and 1)", packetizationMode)
	}
	return &Decoder{}, nil
}

// NewH265 returns a decoder for an H.265 track without DONL fields (sprop-max-don-diff 0).
func NewH265() (*Decoder, error) {
	return &Decoder{h265: true}, nil
}

func (d *Decoder) maxNALUs() int {
	if d.h265 {
		return h265.MaxNALUsPerAccessUnit
	}
	return h264.MaxNALUsPerAccessUnit
}

func (d *Decoder) maxAUSize() int {
	if d.h265 {
		return h265.MaxAccessUnitSize
	}
	return h264.MaxAccessUnitSize
}

func (d *Decoder) errMorePackets() error {
	if d.h265 {
		return rtph265.ErrMorePacketsNeeded
	}
	return rtph264.ErrMorePacketsNeeded
}

// Decode decodes an access unit from an RTP packet. It returns the same results as
// gortsplib's Decoder.Decode for every packet sequence, except that the returned NAL units
// alias buffers owned by the Decoder: they are valid until the next call of Decode.
func (d *Decoder) Decode(pkt *rtp.Packet) ([][]byte, error) {
	var err error
	if d.h265 {
		err = d.decodeH265(pkt)
	} else {
		err = d.decodeH264(pkt)
	}
	if err != nil {
		return nil, err
	}

	cur := &d.bufs[d.cur]

	// H.264 splits access units by timestamp too (some cameras, like the FLIR M400, do
	// not set the marker bit): the previous access unit is returned and the packet's NAL
	// units start the next one, whatever the packet's marker.
	if !d.h265 && len(cur.nalus) > 0 && pkt.Timestamp != d.auTS {
		next := 1 - d.cur
		if d.stagedBuf != next {
			d.moveStaged(next, true)
		}
		ret := cur.result()
		retTS := d.auTS
		d.cur = next
		d.auSize = 0
		d.bufs[next].nalus = d.bufs[next].nalus[:0]
		if err := d.commit(pkt.Timestamp); err != nil {
			return nil, err
		}
		d.retTS = retTS
		return ret, nil
	}

	if d.stagedBuf != d.cur {
		d.moveStaged(d.cur, false)
	}
	if err := d.commit(pkt.Timestamp); err != nil {
		return nil, err
	}
	if !pkt.Marker {
		return nil, d.errMorePackets()
	}
	ret := cur.result()
	d.cur = 1 - d.cur
	d.bufs[d.cur].clear()
	d.auSize = 0
	d.retTS = pkt.Timestamp
	return ret, nil
}

// Timestamp returns the RTP timestamp of the access unit the last successful Decode
// returned. It is not always the packet's: on a timestamp change without a marker bit,
// Decode returns the previous access unit.
func (d *Decoder) Timestamp() uint32 { return d.retTS }

// commit adds the staged NAL units to the access unit being filled, or drops both when a
// limit would be exceeded (gortsplib then resets its frame buffer).
func (d *Decoder) commit(ts uint32) error {
	b := &d.bufs[d.cur]
	if n := len(b.nalus) + d.stagedCount; n > d.maxNALUs() {
		d.resetAU()
		return fmt.Errorf("%s RTP: NAL unit count (%d) exceeds maximum allowed (%d)", d.codecName(), n, d.maxNALUs())
	}
	if size := d.auSize + d.stagedSize; size > d.maxAUSize() {
		d.resetAU()
		return fmt.Errorf("%s RTP: access unit size (%d) is too big, maximum is %d", d.codecName(), size, d.maxAUSize())
	}
	b.nalus = append(b.nalus, d.staged...)
	d.auSize += d.stagedSize
	d.auTS = ts
	return nil
}

func (d *Decoder) codecName() string {
	if d.h265 {
		return "H.265"
	}
	return "H.264"
}

// resetAU drops the access unit being filled (and the staged NAL units, which at that
// point live in the same buffer).
func (d *Decoder) resetAU() {
	d.bufs[d.cur].clear()
	d.auSize = 0
}

// moveStaged copies the staged bytes to the end of bufs[dst] (emptied first when clear),
// for when they were staged in the other buffer than the one that must keep them.
func (d *Decoder) moveStaged(dst int, clear bool) {
	src := &d.bufs[d.stagedBuf]
	to := &d.bufs[dst]
	if clear {
		to.clear()
	}
	base := len(to.data)
	to.data = append(to.data, src.data[d.stagedStart:]...)
	delta := base - d.stagedStart
	for i := range d.staged {
		d.staged[i].start += delta
		d.staged[i].end += delta
	}
	src.data = src.data[:d.stagedStart]
	d.stagedBuf, d.stagedStart = dst, base
}

// stageTarget returns the buffer in which the NAL units of a packet with timestamp ts
// should be written: the other buffer when they will start a new access unit because the
// timestamp changed (H.264), else the buffer being filled.
func (d *Decoder) stageTarget(ts uint32) int {
	if !d.h265 && len(d.bufs[d.cur].nalus) > 0 && ts != d.auTS {
		o := 1 - d.cur
		d.bufs[o].clear()
		return o
	}
	return d.cur
}

// beginStage starts staging the packet's NAL units in buffer b.
func (d *Decoder) beginStage(b int) {
	d.stagedBuf = b
	d.stagedStart = len(d.bufs[b].data)
	d.staged = d.staged[:0]
	d.stagedCount = 0
	d.stagedSize = 0
}

// stage records data[start:end] of the staging buffer as a NAL unit of the packet.
func (d *Decoder) stage(start, end int) {
	if len(d.staged) <= d.maxNALUs() {
		d.staged = append(d.staged, span{start, end})
	}
	d.stagedCount++
	d.stagedSize += end - start
}

// dropStaged forgets the staged NAL units and their bytes.
func (d *Decoder) dropStaged() {
	b := &d.bufs[d.stagedBuf]
	b.data = b.data[:d.stagedStart]
	d.staged = d.staged[:0]
	d.stagedCount = 0
	d.stagedSize = 0
}

// stageCopy copies payload at the end of the staging target for timestamp ts and returns
// the offset where it starts.
func (d *Decoder) stageCopy(ts uint32, payload []byte) int {
	b := d.stageTarget(ts)
	d.beginStage(b)
	d.bufs[b].data = append(d.bufs[b].data, payload...)
	return d.stagedStart
}

// resetFragments drops the fragmented NAL unit being reassembled, if any.
func (d *Decoder) resetFragments() {
	if d.fragSize != 0 {
		b := &d.bufs[d.fragBuf]
		b.data = b.data[:d.fragStart]
		d.fragSize = 0
	}
}

// startFragment begins reassembling a fragmented NAL unit whose header is hdr and whose
// first fragment is frag; size is gortsplib's initial fragmentsSize.
func (d *Decoder) startFragment(pkt *rtp.Packet, hdr []byte, frag []byte) {
	b := d.stageTarget(pkt.Timestamp)
	d.fragBuf = b
	d.fragStart = len(d.bufs[b].data)
	d.bufs[b].data = append(d.bufs[b].data, hdr...)
	d.bufs[b].data = append(d.bufs[b].data, frag...)
	d.fragSize = len(hdr) + len(frag)
	d.fragNextSeq = pkt.SequenceNumber + 1
	d.firstPacketReceived = true
}

// finishFragment stages the reassembled NAL unit.
func (d *Decoder) finishFragment() {
	d.beginStage(d.fragBuf)
	d.stagedStart = d.fragStart
	d.stage(d.fragStart, d.fragStart+d.fragSize)
	d.fragSize = 0
}

// continueFragment handles a non-starting fragment; frag is its payload after the FU
// header(s), end its end bit. It returns nil when the NAL unit is complete and staged.
func (d *Decoder) continueFragment(pkt *rtp.Packet, frag []byte, end bool) error {
	if d.fragSize == 0 {
		if !d.firstPacketReceived {
			if d.h265 {
				return rtph265.ErrNonStartingPacketAndNoPrevious
			}
			return rtph264.ErrNonStartingPacketAndNoPrevious
		}
		if d.h265 {
			return errH265FUNonStarting
		}
		return errFUANonStarting
	}
	if pkt.SequenceNumber != d.fragNextSeq {
		d.resetFragments()
		if d.h265 {
			return errH265PacketLost
		}
		return errH264PacketLost
	}
	if size := d.fragSize + len(frag); size > d.maxAUSize() {
		d.resetFragments()
		return fmt.Errorf("%s RTP: fragmented NAL unit size (%d) is too big, maximum is %d", d.codecName(), size, d.maxAUSize())
	}
	d.fragSize += len(frag)
	d.bufs[d.fragBuf].data = append(d.bufs[d.fragBuf].data, frag...)
	d.fragNextSeq++
	if !end {
		return d.errMorePackets()
	}
	d.finishFragment()
	return nil
}

// decodeH264 stages the NAL units of an H.264 packet (rtph264's decodeNALUs).
func (d *Decoder) decodeH264(pkt *rtp.Packet) error {
	p := pkt.Payload
	if len(p) < 1 {
		d.resetFragments()
		return errH264TooShort
	}

	switch typ := h264.NALUType(p[0] & 0x1F); typ {
	case h264.NALUTypeFUA:
		if len(p) < 2 {
			return errFUATooShort // gortsplib keeps the fragments here
		}
		start := p[1]>>7 == 1
		end := (p[1]>>6)&0x01 == 1
		if start {
			d.resetFragments()
			nri := (p[0] >> 5) & 0x03
			hdr := [1]byte{nri<<5 | p[1]&0x1F}
			d.startFragment(pkt, hdr[:], p[2:])
			// RFC 6184 forbids start and end bits in the same FU header, but some
			// cameras (CostarHD) send small P-frames that way.
			if end {
				d.finishFragment()
				break
			}
			return rtph264.ErrMorePacketsNeeded
		}
		if err := d.continueFragment(pkt, p[2:], end); err != nil {
			return err
		}

	case h264.NALUTypeSTAPA:
		if err := d.aggregate(pkt.Timestamp, p[1:], true, errSTAPASize); err != nil {
			return err
		}
		if d.stagedCount == 0 {
			d.dropStaged()
			return errSTAPAEmpty
		}
		d.firstPacketReceived = true

	case h264.NALUTypeSTAPB, h264.NALUTypeMTAP16, h264.NALUTypeMTAP24, h264.NALUTypeFUB:
		d.resetFragments()
		d.firstPacketReceived = true
		return fmt.Errorf("H.264 RTP: packet type not supported (%v)", typ)

	default:
		d.resetFragments()
		d.firstPacketReceived = true
		pos := d.stageCopy(pkt.Timestamp, p)
		d.stage(pos, pos+len(p))
	}

	return d.removeAnnexB()
}

// aggregate stages the NAL units of an aggregation packet (H.264 STAP-A, H.265 AP) whose
// payload after the packet's NAL header is payload: 16-bit size, NAL unit, and so on.
// padding: a zero size followed by zeros ends the packet (H.264, as gortsplib); errSize is
// returned, and nothing staged, when the sizes do not fit.
func (d *Decoder) aggregate(ts uint32, payload []byte, padding bool, errSize error) error {
	d.resetFragments()
	pos := d.stageCopy(ts, payload)
	for {
		if len(payload) < 2 {
			d.dropStaged()
			return errSize
		}
		size := int(payload[0])<<8 | int(payload[1])
		payload = payload[2:]
		pos += 2
		if size == 0 && padding && isAllZero(payload) {
			return nil
		}
		if size == 0 || size > len(payload) {
			d.dropStaged()
			return errSize
		}
		d.stage(pos, pos+size)
		payload = payload[size:]
		pos += size
		if len(payload) == 0 {
			return nil
		}
	}
}

func isAllZero(buf []byte) bool {
	for _, b := range buf {
		if b != 0 {
			return false
		}
	}
	return true
}

// removeAnnexB mirrors rtph264's: some cameras and servers wrap NAL units in Annex-B. A
// packet decoding to a single NAL unit that contains a 4-byte start code switches the
// decoder to Annex-B mode for good; in that mode every single NAL unit is split at its
// start codes.
func (d *Decoder) removeAnnexB() error {
	if d.stagedCount != 1 {
		return nil
	}
	buf := d.bufs[d.stagedBuf].data
	s := d.staged[0]
	nalu := buf[s.start:s.end]
	if !d.annexBMode && bytes.Contains(nalu, startCode4) {
		d.annexBMode = true
	}
	if !d.annexBMode {
		return nil
	}
	return d.splitAnnexB(s.start, nalu)
}

// splitAnnexB re-stages nalu, which starts at offset base of the staging buffer, as the NAL
// units h264.AnnexB.Unmarshal finds in it once prefixed with a start code when it lacks
// one. The prefix is not written: scanning the prefixed buffer skips the prefix and then
// scans nalu exactly as this loop does.
func (d *Decoder) splitAnnexB(base int, nalu []byte) error {
	d.staged = d.staged[:0]
	d.stagedCount = 0
	d.stagedSize = 0

	i, start := 0, 0
	for i < len(nalu) {
		lim := min(4, len(nalu)-i)
		data := nalu[i : i+lim]
		switch {
		case len(data) >= 3 && data[0] == 0x00 && data[1] == 0x00 && data[2] == 0x01:
			if i > start {
				d.stage(base+start, base+i)
			}
			i += 3
			start = i
		case len(data) >= 4 && data[0] == 0x00 && data[1] == 0x00 && data[2] == 0x00 && data[3] == 0x01:
			if i > start {
				d.stage(base+start, base+i)
			}
			i += 4
			start = i
		default:
			i++
		}
	}
	if i > start {
		d.stage(base+start, base+i)
	}

	if d.stagedSize > h264.MaxAccessUnitSize {
		size := d.stagedSize
		d.dropStaged()
		return fmt.Errorf("H.264 RTP: Annex-B access unit size (%d) is too big, maximum is %d", size, h264.MaxAccessUnitSize)
	}
	if d.stagedCount == 0 {
		d.dropStaged()
		return h264.ErrAnnexBNoNALUs
	}
	return nil
}

// decodeH265 stages the NAL units of an H.265 packet (rtph265's decodeNALUs).
func (d *Decoder) decodeH265(pkt *rtp.Packet) error {
	p := pkt.Payload
	if len(p) < 2 {
		d.resetFragments()
		return errH265TooShort
	}

	switch h265.NALUType((p[0] >> 1) & 0b111111) {
	case h265.NALUType_AggregationUnit:
		if err := d.aggregate(pkt.Timestamp, p[2:], false, errH265AUSize); err != nil {
			return err
		}
		d.firstPacketReceived = true

	case h265.NALUType_FragmentationUnit:
		if len(p) < 3 {
			d.resetFragments()
			return errH265TooShort
		}
		start := p[2]>>7 == 1
		end := (p[2]>>6)&0x01 == 1
		if start {
			d.resetFragments()
			if end {
				return errH265FUStartAndEnd
			}
			typ := p[2] & 0b111111
			hdr := [2]byte{p[0]&0b10000001 | typ<<1, p[1]}
			d.startFragment(pkt, hdr[:], p[3:])
			return rtph265.ErrMorePacketsNeeded
		}
		if err := d.continueFragment(pkt, p[3:], end); err != nil {
			return err
		}

	case h265.NALUType_PACI:
		d.resetFragments()
		return errH265PACI

	default:
		d.resetFragments()
		// gortsplib's rtph265 does not set firstPacketReceived here; neither do we.
		pos := d.stageCopy(pkt.Timestamp, p)
		d.stage(pos, pos+len(p))
	}
	return nil
}
