// Package replica keeps hot replicas of the segments a node is recording (DESIGN.md,
// write path 3): every fragment appended to a camera's open segment on its owner is
// streamed to the camera's replica node(s) and acknowledged once durable there, so a
// crash of the owner loses at most the fragment in flight; the replica's copy is
// readable while the segment is open; and after the owner's death the replica adopts
// its copy so the footage appears in the timeline.
//
// It must not import node, cluster or gateway, dial anything but the replicas' HTTP
// endpoints, or decide cluster policy: the node says which nodes are replicas, whether an
// owner is alive, when a replica copy is protected elsewhere (Drop), and commits what
// Orphans returns. It never blocks recording for longer than SenderConfig.Timeout per
// fragment, and never drops footage on another node's request once it adopted it.
//
// # Two halves
//
// The Sender runs on the owner: Open creates the segment on each replica, Append sends
// each fragment to every replica in parallel and waits for their acknowledgements (or
// their failure, bounded by the timeout), Seal seals the replicas' copies. A replica that
// fails leaves the stream at once (logged, counted in Metrics().Failures) and is caught
// up in the background: the stream re-reads the fragments already sent from the owner's
// own store (SenderConfig.Source) and puts the replica back in the stream when it holds
// all of them (Rejoins). Replicated() says how many replicas hold everything so far.
//
// The Receiver runs on every node: a storage.Store of its own (<data_dir>/replicas/store,
// so replica copies never mix with the node's own footage, and a segment has the same id
// on owner and replica: storage.NewSegmentID of camera, epoch, start), an owner record
// per segment (<data_dir>/replicas/owners/<id>.json, written before the segment is
// created), and the HTTP endpoints below. Every guarantee of storage holds for the
// replica copy: an acknowledged fragment was fsynced and indexed; a restart seals what
// was open, keeping every acknowledged fragment; epochs are fenced by the store
// (model.ErrStaleEpoch → 409).
//
// # Protocol (HTTP on the node's internal listener, JSON status answers)
//
//	PUT    /internal/v1/replicas/segments/{id}            body: init section
//	       Vigie-Owner: <node>, Vigie-Crc32c: <8 hex>      201 created; 200 + fragments held on a retry
//	POST   /internal/v1/replicas/segments/{id}/fragments  body: moof+mdat
//	       Vigie-Seq: <n from 0>, Vigie-Start: <Unix ns>, Vigie-Duration: <ns>,
//	       Vigie-Keyframe: 0|1, Vigie-Crc32c: <8 hex>      200 once durable
//	POST   /internal/v1/replicas/segments/{id}/seal       200 (idempotent)
//	DELETE /internal/v1/replicas/segments/{id}            200; 409 adopted when the replica adopted it
//	GET    /internal/v1/replicas/segments/{id}            200 + fragments held, sealed
//
// The sequence number makes an append idempotent and gap-free: seq < held with the same
// start, size and CRC is acknowledged again without writing (a retry whose answer was
// lost); with other content it is 409 conflict; seq > held is 409 gap (the answer says how
// many are held, the sender resumes there). The body's CRC-32C is checked before anything
// is written, and a truncated body (owner crashed mid-send) is refused, so the fragment
// in flight is the only one a crash can lose. Bad input is 400 naming the header; an
// unknown segment 404; a segment sealed by a restart of the replica 409 sealed (the
// sender drops and refills it from its store). Nothing is changed by a refused request.
//
// # What the node calls, and where
//
//   - Start: replica.Open(Config{Dir: <data_dir>/replicas, NodeID, NoSync, Logger});
//     mount Receiver.Handlers() on the HTTP listener; NewSender(SenderConfig{NodeID,
//     Resolve: peer address lookup, Source: the node's own *storage.Store}).
//   - Recorder, on store.Create of a segment: stream, _ = sender.Open(ctx, camera, epoch,
//     start, init, replicas). After each successful local w.Append(f):
//     stream.Append(ctx, f) (f.Data may be reused once it returns). After w.Seal():
//     stream.Seal(ctx) (log its error, it changes nothing locally). On w.Abort():
//     stream.Abort(ctx). When the camera's replicas change mid-segment:
//     stream.SetReplicas(nodes). Close() a stream on any other exit.
//   - Reads: Receiver.Store() serves replica segments (open ones too) like the main store.
//   - Periodically (and at start): Receiver.Orphans(isOwnerAlive) → commit each returned
//     segment (Node = this node) with ReconcileSegment; Receiver.SealIdle(d) for copies an
//     owner abandoned by restarting; Receiver.Drop(id) once a replica copy is protected
//     elsewhere (owner's copy striped, or committed and held by the owner).
package replica
