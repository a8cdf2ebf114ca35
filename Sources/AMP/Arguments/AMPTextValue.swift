/// An AMP value whose canonical form is text (`AMPInteger`, `AMPDecimal`): outside AMP
/// (JSON, property lists) it is coded as that text.
public protocol AMPTextValue: Codable, LosslessStringConvertible {}

extension AMPTextValue {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a valid \(Self.self): \(text)"))
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
