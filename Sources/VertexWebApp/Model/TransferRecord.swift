import Foundation
import Q2Q

/// A transfer the page shows, in progress or ended.
struct TransferRecord {
    enum Direction: String { case send, receive }
    enum State: String {
        case connecting
        /// Connected; the receiver has not taken the files yet (a sender waits for the
        /// receiver's answer, a receiver for its user's).
        case waiting
        case running
        case done
        case failed
        case refused
    }

    var id: String
    var direction: Direction
    var local: Q2QAddress
    var peer: Q2QAddress
    var state: State
    var method: String?
    var files: [String] = []
    var bytes: Int64 = 0
    var totalBytes: Int64 = 0
    var verified = false
    var error: String?
    var started = Date()
    /// When the data began to flow, and when it ended: the rate is over that time.
    var dataStarted: ContinuousClock.Instant?
    var dataEnded: ContinuousClock.Instant?

    var isEnded: Bool { state == .done || state == .failed || state == .refused }

    var snapshot: AppSnapshot.Transfer {
        var rate = 0.0
        if let dataStarted {
            let seconds = Double(((dataEnded ?? .now) - dataStarted) / .milliseconds(1)) / 1000
            if seconds > 0 { rate = Double(bytes) / seconds }
        }
        return AppSnapshot.Transfer(id: id, direction: direction.rawValue, local: local.description, peer: peer.description,
                                    files: files, bytes: bytes, totalBytes: totalBytes, bytesPerSecond: rate, method: method,
                                    state: state.rawValue, verified: verified, error: error, started: started)
    }
}

extension VertexApp {
    func addTransfer(_ record: TransferRecord) {
        state.withLock { state in
            state.transfers.append(record)
            // Ended transfers beyond the newest few are forgotten (the inbox keeps files).
            let ended = state.transfers.filter(\.isEnded).count
            if ended > Self.keptTransfers, let oldest = state.transfers.firstIndex(where: \.isEnded) {
                state.transfers.remove(at: oldest)
            }
        }
        changes.changed()
    }

    func updateTransfer(_ id: String, _ change: (inout TransferRecord) -> Void) {
        state.withLock { state in
            guard let index = state.transfers.firstIndex(where: { $0.id == id }) else { return }
            change(&state.transfers[index])
        }
        changes.changed()
    }

    /// Bytes moved so far: the transfer runs (the receiver took it).
    func progress(_ id: String, bytes: Int64, of total: Int64) {
        updateTransfer(id) { record in
            if record.dataStarted == nil { record.dataStarted = .now }
            record.state = .running
            record.bytes = bytes
            record.totalBytes = total
        }
    }

    /// Ends transfer `id`: done when `error` is nil, else failed (a refusal stays one).
    func finishTransfer(_ id: String, verified: Bool, error: String? = nil) {
        updateTransfer(id) { record in
            record.dataEnded = .now
            record.verified = verified
            if record.state == .refused { return }
            record.state = error == nil ? .done : .failed
            record.error = error
        }
    }
}
