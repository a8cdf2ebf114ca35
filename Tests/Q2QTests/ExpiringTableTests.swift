import Foundation
@testable import Q2Q
import Testing
import VertexTestSupport

@Suite("Expiring tables (offers, listener ids)")
struct ExpiringTableTests {
    /// A seeded schedule of inserts, removals and a clock moving on, checked against a
    /// plain dictionary: after each expiry the table holds exactly the unexpired entries
    /// not removed, and the per-owner counts agree with them.
    @Test("random schedules agree with a dictionary filtered by expiry")
    func randomSchedules() {
        var random = SplitMix64(seed: 42)
        var table = ExpiringTable<Int, Int>()
        var model: [String: (owner: Int, expires: Date)] = [:]
        var now = Date(timeIntervalSince1970: 1_000_000)
        let lifetime: TimeInterval = 120
        for step in 0..<20_000 {
            switch random.next() % 4 {
            case 0, 1:
                let id = "id\(step)"
                let owner = Int(random.next() % 5)
                let added = table.insert(id, owner: owner, expires: now + lifetime, value: step)
                let addedAgain = table.insert(id, owner: owner, expires: now + lifetime, value: step)
                #expect(added && !addedAgain)
                model[id] = (owner, now + lifetime)
            case 2:
                if let id = model.keys.randomElement(using: &random) {
                    let removed = table.remove(id)
                    #expect(removed != nil)
                    model[id] = nil
                }
            default:
                now += TimeInterval(random.next() % 30)
            }
            table.expire(now: now)
            model = model.filter { $0.value.expires > now }
            #expect(Set(table.entries.keys) == Set(model.keys))
            for owner in 0..<5 {
                #expect(table.count(of: owner) == model.values.filter { $0.owner == owner }.count)
            }
        }
    }
}
