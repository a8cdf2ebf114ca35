import AMP
import NIOCore
import Q2Q

extension SigmaSwarm {
    /// `Request` from `peer`: queued; its upload task serves the queue.
    func requested(_ piece: Int, by peer: Q2QAddress) {
        // A peer must have joined (its `Get`, or ours, whose answer may still be on its
        // way) and be allowed before it asks for pieces.
        guard var state = peers[peer], mayFetch(peer) else {
            context.logger.info("sigma: Request from \(peer), who has not joined", metadata: ["share": "\(id)"])
            return
        }
        guard piece == RequestPiece.anyPiece || (piece >= 0 && piece < layout.pieceCount) else {
            return violation(by: peer, "Request of piece \(piece), past the share's \(layout.pieceCount)")
        }
        guard state.queue.count < Self.maximumQueuedRequests else {
            send(RejectPiece.self, .init(share: id.description, piece: piece), to: peer)
            return violation(by: peer, "more than \(Self.maximumQueuedRequests) requests queued")
        }
        state.queue.append(piece)
        let start = !state.uploading
        state.uploading = true
        peers[peer] = state
        if start { Task { await self.upload(to: peer) } }
    }

    /// `Cancel` from `peer`: a queued request it no longer wants.
    func cancelled(_ piece: Int, by peer: Q2QAddress) {
        guard let index = peers[peer]?.queue.firstIndex(of: piece) else { return }
        peers[peer]?.queue.remove(at: index)
    }

    /// The next piece to send `peer`, and its connection; nil when its queue is empty
    /// (the upload task then ends). Requests for pieces we lack, and -1 requests when
    /// we have nothing it lacks, are rejected.
    func nextUpload(for peer: Q2QAddress) -> (piece: Int, connection: AMPConnection)? {
        while var state = peers[peer], let connection = state.connection, !closed, !state.queue.isEmpty {
            var piece = state.queue.removeFirst()
            if piece == RequestPiece.anyPiece {
                piece = choose(for: state)
                if piece >= 0 { state.offered.insert(piece) }
            }
            peers[peer] = state
            guard piece >= 0, picker.have[piece] else {
                send(RejectPiece.self, .init(share: id.description, piece: piece < 0 ? RequestPiece.anyPiece : piece), to: peer)
                continue
            }
            uploadCount[piece] &+= 1
            return (piece, connection)
        }
        peers[peer]?.uploading = false
        return nil
    }

    /// Our choice for a -1 request: a piece we hold and `peer` lacks (nor was offered),
    /// the one we uploaded least, then the one fewest peers hold; -1 when there is none.
    private func choose(for state: SwarmPeer) -> Int {
        var best = -1
        var bestKey = (UInt16.max, Int.max)
        let count = layout.pieceCount
        let start = Int.random(in: 0..<count)
        for step in 0..<count {
            let piece = (start + step) % count
            guard picker.have[piece], !state.mask[piece], !state.offered.contains(piece) else { continue }
            let key = (uploadCount[piece], picker.availabilityOf(piece))
            if key < bestKey {
                best = piece
                bestKey = key
                if key == (0, 0) { break }
            }
        }
        return best
    }

    func uploaded(_ bytes: Int, to peer: Q2QAddress) {
        statistics.bytesUploaded += Int64(bytes)
        peers[peer]?.sent += Int64(bytes)
    }

    /// Serves `peer`'s requests until its queue is empty: each piece read from disk and
    /// sent in blocks, each block waiting for the node's upload cap and for the
    /// connection to take more.
    nonisolated func upload(to peer: Q2QAddress) async {
        let share = id.description
        while let (piece, connection) = await nextUpload(for: peer) {
            do {
                let bytes = try files.read(piece, allocator: connection.channel.allocator)
                var offset = 0
                while offset < bytes.readableBytes {
                    let length = min(PieceLayout.transferBlock, bytes.readableBytes - offset)
                    await context.limiter.acquire(length)
                    if !connection.isWritable { try await connection.whenWritable().get() }
                    let body = bytes.getSlice(at: bytes.readerIndex + offset, length: length)!
                    try connection.sendWithoutWaiting(PieceData.self, .init(share: share, piece: piece, offset: offset,
                                                                            body: AMPBytes(body)))
                    offset += length
                }
                await uploaded(bytes.readableBytes, to: peer)
            } catch {
                context.logger.info("sigma: upload to \(peer) stopped", metadata: ["share": "\(share)", "error": "\(error)"])
                await uploadFailed(to: peer)
                return
            }
        }
    }

    private func uploadFailed(to peer: Q2QAddress) {
        peers[peer]?.queue.removeAll()
        peers[peer]?.uploading = false
    }

    // MARK: Metadata

    /// `Manifest`: a chunk of the manifest.
    func manifestChunk(for peer: Q2QAddress, offset: Int) throws(SigmaError) -> FetchManifest.Response {
        guard mayFetch(peer) else { throw .notAllowed("\(peer) may not fetch \(manifest.name)") }
        let bytes = manifest.encoded()
        guard offset >= 0, offset <= bytes.count else { throw .badRequest("offset \(offset) outside the manifest's \(bytes.count) bytes") }
        let end = min(bytes.count, offset + FetchManifest.maximumChunk)
        return .init(total: bytes.count, chunk: AMPBytes(bytes[offset..<end]))
    }

    /// `Hashes`: part of a file's piece layer.
    func hashes(for peer: Q2QAddress, file: Int, first: Int, count: Int) throws(SigmaError) -> FetchHashes.Response {
        guard mayFetch(peer) else { throw .notAllowed("\(peer) may not fetch \(manifest.name)") }
        guard file >= 0, file < layers.count else { throw .badRequest("no file \(file) in this share") }
        let layer = layers[file]
        guard count > 0, count <= FetchHashes.maximumCount, first >= 0, first <= layer.count - count else {
            throw .badRequest("hashes \(first)..<\(first + count) outside file \(file)'s \(layer.count)")
        }
        return .init(hashes: AMPBytes(layer[first..<first + count].joined()))
    }
}
