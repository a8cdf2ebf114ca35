import PTCPSimulator

/// A seeded generator for property tests, so that a failing case can be replayed from
/// its seed: SplitMix64, the same one the PTCP simulator draws its randomness from.
public typealias SplitMix64 = SimulationRandom
