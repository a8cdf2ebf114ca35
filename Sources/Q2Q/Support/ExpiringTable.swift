import Foundation
import NIOCore

/// Entries that all live the same time (offers, listener ids), keyed by id and counted
/// per owner. They expire in the order they were added, so expired ones are dropped from
/// the front of a queue and no operation scans the whole table (security review M3: a
/// caller looping `inbound` made every new offer filter the whole table, under a lock).
/// Sans-I/O: callers pass the time.
struct ExpiringTable<Owner: Hashable, Value> {
    struct Entry {
        let owner: Owner
        let expires: Date
        var value: Value
    }

    private(set) var entries: [String: Entry] = [:]
    private var order = CircularBuffer<(id: String, expires: Date)>()
    private var perOwner: [Owner: Int] = [:]

    /// How many unexpired entries (as of the last ``expire(now:)``) `owner` holds.
    func count(of owner: Owner) -> Int { perOwner[owner, default: 0] }

    /// The entry `id`, if it has not expired at `now`.
    func live(_ id: String, now: Date) -> Entry? {
        guard let entry = entries[id], entry.expires > now else { return nil }
        return entry
    }

    /// Adds `id` for `owner` until `expires` (every entry lives the same time, so they
    /// are added in the order they expire); `false` when `id` is there already.
    @discardableResult
    mutating func insert(_ id: String, owner: Owner, expires: Date, value: Value) -> Bool {
        guard entries[id] == nil else { return false }
        entries[id] = Entry(owner: owner, expires: expires, value: value)
        order.append((id, expires))
        perOwner[owner, default: 0] += 1
        return true
    }

    /// Changes the value of `id`, if it is there.
    mutating func modify(_ id: String, _ change: (inout Value) -> Void) {
        guard var entry = entries[id] else { return }
        change(&entry.value)
        entries[id] = entry
    }

    @discardableResult
    mutating func remove(_ id: String) -> Entry? {
        guard let entry = entries.removeValue(forKey: id) else { return nil }
        let left = perOwner[entry.owner, default: 1] - 1
        perOwner[entry.owner] = left > 0 ? left : nil
        return entry
    }

    /// Removes every entry `matching` says (a connection that closed takes its offers along).
    mutating func removeAll(where matching: (Entry) -> Bool) {
        for (id, entry) in entries where matching(entry) { remove(id) }
    }

    /// Drops the entries at the front of the queue that have expired.
    mutating func expire(now: Date) {
        while let first = order.first, first.expires <= now {
            order.removeFirst()
            if let entry = entries[first.id], entry.expires <= now { remove(first.id) }
        }
    }
}
