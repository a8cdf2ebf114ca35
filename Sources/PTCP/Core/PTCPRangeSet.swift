/// A set of `UInt64`s kept as sorted, disjoint, non-adjacent half-open ranges: which
/// packet numbers arrived, which stream bytes are held or acknowledged.
///
/// Inserting costs a binary search plus the merge; a peer that makes us hold many
/// ranges (every other byte) is bounded by the callers (at most a window of data,
/// at most `maximumRanges` packet-number ranges).
struct PTCPRangeSet: Equatable, Sendable {
    private(set) var ranges: [Range<UInt64>] = []

    var isEmpty: Bool { ranges.isEmpty }
    var count: Int { ranges.count }
    var first: Range<UInt64>? { ranges.first }
    var last: Range<UInt64>? { ranges.last }

    /// Index of the first range whose upper bound is ≥ `value`.
    private func firstIndex(endingAtOrAfter value: UInt64) -> Int {
        var low = 0, high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].upperBound < value { low = mid + 1 } else { high = mid }
        }
        return low
    }

    func contains(_ value: UInt64) -> Bool {
        let index = firstIndex(endingAtOrAfter: value + 1)
        return index < ranges.count && ranges[index].contains(value)
    }

    /// Whether every value of `range` is in the set.
    func contains(_ range: Range<UInt64>) -> Bool {
        guard !range.isEmpty else { return true }
        let index = firstIndex(endingAtOrAfter: range.lowerBound + 1)
        return index < ranges.count && ranges[index].lowerBound <= range.lowerBound && ranges[index].upperBound >= range.upperBound
    }

    mutating func insert(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        let index = firstIndex(endingAtOrAfter: range.lowerBound)
        var merged = range
        while index < ranges.count, ranges[index].lowerBound <= merged.upperBound {
            merged = min(merged.lowerBound, ranges[index].lowerBound)..<max(merged.upperBound, ranges[index].upperBound)
            ranges.remove(at: index)
        }
        ranges.insert(merged, at: index)
    }

    mutating func insert(_ value: UInt64) { insert(value..<value + 1) }

    mutating func remove(_ range: Range<UInt64>) {
        guard !range.isEmpty else { return }
        var index = firstIndex(endingAtOrAfter: range.lowerBound + 1)
        var replacement: [Range<UInt64>] = []
        let start = index
        while index < ranges.count, ranges[index].lowerBound < range.upperBound {
            let existing = ranges[index]
            if existing.lowerBound < range.lowerBound { replacement.append(existing.lowerBound..<range.lowerBound) }
            if existing.upperBound > range.upperBound { replacement.append(range.upperBound..<existing.upperBound) }
            index += 1
        }
        ranges.replaceSubrange(start..<index, with: replacement)
    }

    /// Forgets everything below `value`.
    mutating func removeAll(below value: UInt64) {
        let index = firstIndex(endingAtOrAfter: value + 1)
        ranges.removeFirst(index)
        if let first = ranges.first, first.lowerBound < value {
            ranges[0] = value..<first.upperBound
        }
    }

    /// Drops the lowest ranges until at most `count` are left.
    mutating func keepHighest(_ count: Int) {
        if ranges.count > count { ranges.removeFirst(ranges.count - count) }
    }

    /// The parts of `range` that are not in the set, in order.
    func gaps(in range: Range<UInt64>) -> [Range<UInt64>] {
        var result: [Range<UInt64>] = []
        var cursor = range.lowerBound
        var index = firstIndex(endingAtOrAfter: range.lowerBound + 1)
        while cursor < range.upperBound {
            guard index < ranges.count, ranges[index].lowerBound < range.upperBound else {
                result.append(cursor..<range.upperBound)
                break
            }
            if ranges[index].lowerBound > cursor { result.append(cursor..<ranges[index].lowerBound) }
            cursor = max(cursor, ranges[index].upperBound)
            index += 1
        }
        return result
    }
}
