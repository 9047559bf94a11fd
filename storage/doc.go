// Package storage is a node's local segment and shard store: it keeps the fMP4 footage of
// the cameras this node records (or replicates) as segment files on local disk, with a
// Pebble index of every fragment, checksums over every byte it serves, epoch fencing, and a
// startup check that makes files and index agree again after a crash. It also holds the
// shards of erasure-coded stripes other nodes placed here, reads any segment of a stripe
// through a DegradedReader (its own copy, or rebuilt from k other shards), scrubs and
// repairs. Reed–Solomon itself is in storage/erasure, node-to-node transfer in
// storage/transfer.
//
// It must not dial other nodes, read the cluster catalog or import cluster, gateway or
// node: the node wires it in, reconciles All() and Shards() with the catalog, decides
// placement, and passes a ShardFetcher for remote shards. It never serves a byte that
// failed its checksum, and never throws footage away silently: anything it cannot trust it
// moves to quarantine/ and says so.
//
// # Stripes (DESIGN.md write path 5–7)
//
// A stripe groups k sealed segments (the data shards, kept whole: contiguous layout as in
// Facebook's f4 and SeaweedFS EC volumes) and m parity shards computed by erasure.Encode
// over the segments virtually padded with zeros to the shard size, the largest segment's
// size. Stripe describes one as the catalog records it. On the node that recorded a
// segment, the segment file is its data shard (OpenSegmentShard, verified with the
// segment's block CRCs); elsewhere shards are files under shards/ written by PutShard
// (temporary file, fsync, rename, directory fsync, synced index record: durable and atomic;
// a failure, a full disk or a cancelled transfer leaves nothing behind). Reads of a data
// segment go through DegradedReader: its own shard while it reads and verifies, else the
// same byte range of any k other shards, fetched in parallel and decoded (Reed–Solomon is
// column-wise, so any range rebuilds from the same range). Scrub re-verifies everything at
// a bounded rate and reports Findings; Rebuild + RepairShard/RepairSegment rewrite a bad
// local copy, and accept only bytes that match the checksums first recorded.
//
// # Layout on disk
//
//	<Dir>/segments/<camera>/<segment id>.seg   one file per segment
//	<Dir>/shards/<stripe>.<index>.shard        one file per shard (parity, or a data
//	                                           segment received from another node)
//	<Dir>/shards/<…>.shard.tmp-<random>        a shard being received (removed at Open)
//	<Dir>/index/                               Pebble: segment, fragment and shard records
//	<Dir>/quarantine/<name>[.N]                files moved aside at startup, each with a
//	<Dir>/quarantine/<name>[.N].reason         text file saying why
//
// A segment file is the segment's bytes and nothing else: the init section (ftyp+moov) at
// offset 0, then the fragments (moof+mdat) in the order they were appended. It is a valid
// fragmented MP4 file on its own, and a single contiguous byte string, so it can later be a
// data shard of an erasure-coded stripe unchanged. Everything else about it (which
// fragment lives at which offset, checksums, sealed or not) lives in the index.
//
// A segment id reads "<camera>.<start>.<epoch>", start being the Unix nanoseconds of the
// segment start as 16 lower-case hex digits, e.g. "cam-12.17f3a2b4c5d6e7f8.4". Camera ids
// cannot hold '.', so the id parses back (ParseSegmentID).
//
// # Index keys (fixed-width, big-endian, so a prefix scan is a time-ordered range scan)
//
//	's' camera 0x00 start(8) epoch(8)            → segment record (init length and CRC,
//	                                               codec hash, block size; once sealed:
//	                                               end, bytes, fragment count, whole-file
//	                                               CRC-32C, one CRC-32C per block)
//	'f' camera 0x00 start(8) epoch(8) seq(4)     → fragment record (offset, size, start,
//	                                               duration, keyframe, CRC-32C of its bytes)
//	'e' camera                                   → highest epoch seen for the camera
//	'd' camera 0x00 start(8) epoch(8)            → deletion in progress (tombstone)
//	'h' stripe 0x00 index(2)                     → shard record (size, block size,
//	                                               whole-file CRC-32C, one CRC-32C per block)
//
// Values are compact binary records with a version byte; their decoders are fuzzed.
//
// # Invariants
//
//  1. An Append that returned nil is durable: the fragment's bytes were synced (a
//     syncfs(2) round shared by every camera's appends, started after they were written)
//     before its index record was committed with a synced Pebble batch. Nothing else is
//     acknowledged.
//  2. Every byte served is verified: the init against its CRC when a reader opens, each
//     fragment against its own CRC when read. Sealed segments also carry per-block CRCs
//     and a whole-file CRC (Verify, and later the scrubber and erasure coding, use those).
//  3. After a crash (kill -9 while recording), Open seals every segment that was open: it
//     keeps the fragments whose index record exists, whose bytes are all in the file and
//     whose CRC matches, truncates the file after the last one kept, and reports what it
//     dropped. So at most the fragment in flight is lost.
//  4. Files and index agree after Open: a file without a segment record is quarantined; a
//     record without its file is dropped; a sealed file whose size differs from its record
//     is quarantined; an interrupted deletion is finished. RecoveryReport says which.
//  5. Fencing: Create refuses an epoch lower than the highest one seen for the camera
//     (persisted in the index), and Append refuses to write for an epoch that has since
//     been superseded.
//  6. A failed Append (full disk, I/O error, bad input) leaves the segment as it was before
//     the call: the file is truncated back and no index record is written.
package storage
